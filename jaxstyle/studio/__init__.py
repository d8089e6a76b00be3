"""``jaxstyle studio``: a local web page that drives `jaxstyle.stylize` and shows it working.

`form` turns `StyleOptions` into the page's form and back; `store` owns the server's run folder
(uploads, examples, results); `commands` are a run and a sweep from arrays to files, through the
pipeline every command goes through (`jaxstyle.pipeline`), and `transport` is what they show the
page and how its Stop button stops them; `worker` runs them one at a time in one thread, keeping
the network and compiled code warm; `guard` refuses requests that do not come from the page;
`limits` bounds what a request may hold; `server` is the HTTP side (Starlette, server-sent
events). Needs the ``studio`` extra.
"""

DEFAULT_PORT = 8765
"""``jaxstyle studio``'s port unless ``--port`` says otherwise."""

MAX_UPLOAD_MB = 50.0
"""``--max-upload-mb``'s default: the largest upload in MiB (pixels: ``--max-pixels``)."""

DISK_BUDGET_MB = 1024.0
"""``--disk-budget-mb``'s default: what the finished runs' folders may take in MiB before the
oldest are removed, with their history entries (a run at 512 px keeps under 1 MB: its PNG,
report and masks; at 64-160 px, about 30 kB). Uploads are not counted."""
