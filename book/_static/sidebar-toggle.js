// The sidebar button of the book's pages.
//
// sphinx-book-theme 1.4.0 on the pinned pydata-sphinx-theme 0.20.0 puts two `.primary-toggle`
// buttons on every page: one in the theme's top bar, which the book theme hides, and the one a
// reader sees, in the article's header. Both themes bind their click handlers with
// `document.querySelector(".primary-toggle")`, the first of the two: on a phone the visible
// button then opens nothing, and on a desktop it does not collapse the sidebar. Here a click on
// any other such button is passed on to the first one, so the themes' own handlers run: the
// sidebar opens as a drawer below 992 px and collapses or comes back above. The same for the
// secondary (table of contents) toggles.
(function () {
  function forward(kind) {
    const buttons = document.querySelectorAll("." + kind + "-toggle");
    const first = buttons[0];
    buttons.forEach(function (button) {
      if (button === first) return;
      button.addEventListener("click", function (event) {
        event.preventDefault();
        event.stopPropagation();
        button.blur();
        first.click();
      });
    });
  }
  function init() {
    forward("primary");
    forward("secondary");
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
