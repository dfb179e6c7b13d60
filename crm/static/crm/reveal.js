// Reveal a sensitive value on the staff person page: POST the reason, show the value, mask again.
document.addEventListener("click", async (event) => {
  const button = event.target.closest(".reveal-button");
  if (!button || button.disabled) return;
  const row = button.closest(".sensitive");
  const reason = row.querySelector(".reveal-reason");
  const shown = row.querySelector(".sensitive-value");
  const masked = shown.dataset.masked || shown.textContent;
  shown.dataset.masked = masked;
  if (!reason.value.trim()) {
    reason.focus();
    reason.setAttribute("aria-invalid", "true");
    return;
  }
  reason.removeAttribute("aria-invalid");
  shown.classList.remove("reveal-error");
  // Disabled while the request runs: a double click must not reveal (and log) twice.
  button.disabled = true;
  const body = new FormData();
  body.append("reason", reason.value);
  const token = document.querySelector("[name=csrfmiddlewaretoken]").value;
  let response, data;
  try {
    response = await fetch(button.dataset.url, {
      method: "POST", body, credentials: "same-origin", headers: {"X-CSRFToken": token},
    });
    // An expired session or a CSRF failure answers with an HTML page, not JSON.
    data = await response.json();
  } catch (error) {
    data = {};
  }
  if (!response || !response.ok || data.value === undefined) {
    shown.textContent = data.detail || button.dataset.refused || "Refused";
    shown.classList.add("reveal-error");
    button.disabled = false;
    return;
  }
  shown.textContent = data.value;
  shown.classList.add("revealed");
  reason.value = "";
  setTimeout(() => {
    shown.textContent = masked;
    shown.classList.remove("revealed");
    button.disabled = false;
  }, data.remask_after_seconds * 1000);
});
