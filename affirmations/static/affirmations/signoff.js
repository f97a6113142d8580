// The sign-off form submits once: a double click would record two events.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (!form.matches || !form.matches("form[data-submit-once]")) return;
  if (form.dataset.submitted) {
    event.preventDefault();
    return;
  }
  form.dataset.submitted = "1";
  form.querySelectorAll("[type=submit]").forEach(function (button) {
    // Disabled after this tick, so that the button's own value is still sent.
    setTimeout(function () { button.disabled = true; }, 0);
  });
});
