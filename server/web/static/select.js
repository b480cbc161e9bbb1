// "Select every incident on this page": the header checkbox of a list with bulk actions checks
// or clears the row checkboxes ([data-select]) of the same form, and follows them back.
(function () {
  "use strict";
  for (const all of document.querySelectorAll("[data-select-all]")) {
    const form = all.form;
    const rows = () => form.querySelectorAll("input[data-select]");
    all.addEventListener("change", () => { for (const box of rows()) box.checked = all.checked; });
    form.addEventListener("change", (event) => {
      if (!event.target.matches("input[data-select]")) return;
      const boxes = Array.from(rows());
      all.checked = boxes.length > 0 && boxes.every((box) => box.checked);
    });
  }
})();
