"""The sign-in form and the start-a-job form (re-rendered with the operator's input and clear errors)."""

from __future__ import annotations

from collections.abc import Mapping

from .layout import e, page

PROVIDERS_HINT = "One provider per line: Name, +1 phone. For example:\nJoe's Plumbing, +1 415 555 0101"


def errors_block(errors: list[str]) -> str:
    if not errors:
        return ""
    items = "".join(f"<li>{e(err)}</li>" for err in errors)
    return (f'<div class="errors" role="alert"><p>The job was not started. Please fix:</p>'
            f"<ul>{items}</ul></div>")


def login_page(*, next_url: str, error: str | None = None) -> str:
    err = f'<div class="errors" role="alert"><p>{e(error)}</p></div>' if error else ""
    body = f"""<h1>Sign in</h1>
<p>This Haggle is protected by an API key (<code>HAGGLE_API_KEY</code>).</p>
{err}
<form method="post" action="/ui/login" class="form narrow">
<input type="hidden" name="next" value="{e(next_url)}">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form>"""
    return page("Sign in", body)


def new_job_page(values: Mapping[str, str] | None = None, errors: list[str] | None = None, *,
                 signed_in: bool) -> str:
    v = values or {}
    body = f"""<h1>New job</h1>
<p>Haggle calls each provider, asks for a quote and negotiates toward your target price.</p>
{errors_block(errors or [])}
<form method="post" action="/ui/new" enctype="multipart/form-data" class="form" id="new-job">
<label for="problem">Problem</label>
<textarea id="problem" name="problem" rows="3" maxlength="2000" required
 placeholder="Kitchen faucet leaks at the base">{e(v.get("problem", ""))}</textarea>
<div class="pair">
<div><label for="zip_code">ZIP code</label>
<input id="zip_code" name="zip_code" inputmode="numeric" maxlength="20" required
 value="{e(v.get("zip_code", ""))}"></div>
<div><label for="max_price">Target price (USD)</label>
<input id="max_price" name="max_price" inputmode="decimal" required placeholder="200"
 value="{e(v.get("max_price", ""))}"></div>
</div>
<label for="context_answers">Details for the provider <small>(optional)</small></label>
<textarea id="context_answers" name="context_answers" rows="2"
 placeholder="Single-handle faucet; available weekdays after 3pm">{e(v.get("context_answers", ""))}</textarea>
<label for="providers">Providers</label>
<textarea id="providers" name="providers" rows="5"
 placeholder="{e(PROVIDERS_HINT)}">{e(v.get("providers", ""))}</textarea>
<label for="providers_csv">…or upload a CSV
 <small>(header: service_provider,phone_number[,zip_code,max_price])</small></label>
<input id="providers_csv" name="providers_csv" type="file" accept=".csv,text/csv">
<button type="submit">Start calling</button>
</form>"""
    return page("New job", body, signed_in=signed_in)
