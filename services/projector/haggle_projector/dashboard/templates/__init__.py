"""Server-rendered HTML for the dashboard: small Python string templates with every value escaped.

No template engine: the pages are few and small, and plain functions keep escaping explicit.
"""

from .call import call_page
from .forms import login_page, new_job_page
from .jobs import job_page, jobs_page
from .layout import message_page

__all__ = ["call_page", "job_page", "jobs_page", "login_page", "message_page", "new_job_page"]
