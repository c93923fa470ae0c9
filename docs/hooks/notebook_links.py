"""A MkDocs hook (mkdocs.yml ``hooks``): the notebooks' links to the docs pages.

A notebook links to a page as ``../docs/backprop.md`` (right on GitHub and in
Jupyter, where the notebook sits in notebooks/). On the site the notebook is
the page ``notebooks/<name>/`` and the docs page is ``<page>/``, so the link
becomes ``../../<page>/``; a link to another repository file
(``../kernels/README.md``) has no page on the site and is left as it is.
"""
import re

DOCS_LINK = re.compile(r'href="\.\./docs/([\w.-]+)\.md(#[^"]*)?"')


def rewrite(html):
    """The notebook page's ``html`` with its ../docs/<page>.md links made site links."""
    return DOCS_LINK.sub(lambda m: f'href="../../{m.group(1)}/{m.group(2) or ""}"', html)


def on_page_content(html, page, config, files):
    if page.file.src_uri.startswith("notebooks/") and page.file.src_uri.endswith(".ipynb"):
        return rewrite(html)
    return html
