"""The page frame every dashboard page shares, and the escaping helpers every template uses.

All text that reaches HTML goes through `e()` (provider names and transcripts are untrusted); attribute
values are always double-quoted and escaped the same way.
"""

from __future__ import annotations

import html

STATIC = "/ui/static"


def e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def attrs(values: dict[str, object]) -> str:
    """` name="value"` pairs; None or False values are left out, True gives a bare attribute."""
    out = []
    for name, value in values.items():
        if value is None or value is False:
            continue
        out.append(f" {name}" if value is True else f' {name}="{e(value)}"')
    return "".join(out)


def page(title: str, body: str, *, signed_in: bool = False, main: dict[str, object] | None = None) -> str:
    """A whole HTML document. `main` holds the attributes of <main> (the script reads its data-* values)."""
    sign_out = (
        '<form method="post" action="/ui/logout" class="signout"><button type="submit">Sign out</button></form>'
        if signed_in else ""
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · Haggle</title>
<link rel="stylesheet" href="{STATIC}/style.css">
<script src="{STATIC}/app.js" defer></script>
</head>
<body>
<header class="top">
<a class="brand" href="/">Haggle</a>
<nav><a href="/">Jobs</a><a href="/ui/new">New job</a>{sign_out}</nav>
</header>
<main{attrs(main or {})}>
{body}
</main>
</body>
</html>
"""


def message_page(title: str, text: str, *, signed_in: bool = False) -> str:
    return page(title, f'<h1>{e(title)}</h1>\n<p class="notice">{e(text)}</p>\n<p><a href="/">Back to jobs</a></p>',
                signed_in=signed_in)
