// Reveal a sensitive value on the staff person page: POST the reason, show the value, mask again.
document.addEventListener("click", async (event) => {
  const button = event.target.closest(".reveal-button");
  if (!button) return;
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
  const body = new FormData();
  body.append("reason", reason.value);
  const token = document.querySelector("[name=csrfmiddlewaretoken]").value;
  const response = await fetch(button.dataset.url, {
    method: "POST", body, credentials: "same-origin", headers: {"X-CSRFToken": token},
  });
  const data = await response.json();
  if (!response.ok) {
    shown.textContent = data.detail || "Refused";
    shown.classList.add("reveal-error");
    return;
  }
  shown.textContent = data.value;
  shown.classList.add("revealed");
  reason.value = "";
  button.disabled = true;
  setTimeout(() => {
    shown.textContent = masked;
    shown.classList.remove("revealed");
    button.disabled = false;
  }, data.remask_after_seconds * 1000);
});
