// Typesets the page's math with the KaTeX in katex/ (served with the site, no CDN).
// pymdownx.arithmatex (generic mode) wraps the Markdown pages' $...$ and $$...$$
// as \(...\) and \[...\] in elements of class "arithmatex"; the notebooks'
// Markdown cells (rendered by mkdocs-jupyter) keep their $...$ and $$...$$,
// and so do their headings in the page's table of contents.
// document$ is mkdocs-material's page-load observable.
document$.subscribe(function () {
  var brackets = [
    { left: "\\[", right: "\\]", display: true },
    { left: "\\(", right: "\\)", display: false }
  ];
  var dollars = [
    { left: "$$", right: "$$", display: true },
    { left: "$", right: "$", display: false }
  ].concat(brackets);
  document.querySelectorAll(".arithmatex").forEach(function (el) {
    renderMathInElement(el, { delimiters: brackets, throwOnError: false });
  });
  document.querySelectorAll(".jp-RenderedMarkdown, .md-nav--secondary").forEach(function (el) {
    renderMathInElement(el, { delimiters: dollars, throwOnError: false });
  });
});
