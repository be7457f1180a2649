// Sign-in: password first, then the TOTP code when the account has a second factor.

import type { Clients } from "../api.js";
import { setSession } from "../api.js";
import { clearError, showError } from "../errors.js";
import { el, errorBox } from "../dom.js";
import type { Tokens } from "../gen/guardyn/auth/v1/tokens_pb.js";

export function loginPage(clients: Clients, onSignedIn: () => void): HTMLElement {
  const error = errorBox();
  const username = el("input", { id: "username", name: "username", autocomplete: "username", required: true });
  const password = el("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const device = el("input", { id: "device", name: "device", type: "number", min: "1", max: "127", value: "1" });
  const totp = el("input", { id: "totp", name: "totp", inputmode: "numeric", autocomplete: "one-time-code", pattern: "[0-9]{6}" });
  const totpRow = el("label", {}, "TOTP code", totp);
  totpRow.hidden = true;
  const submit = el("button", { type: "submit", id: "sign-in" }, "Sign in");
  let ticket = "";

  const signedIn = (tokens: Tokens | undefined) => {
    if (!tokens) throw new Error("the server returned no tokens");
    setSession({ username: username.value, accessToken: tokens.accessToken, refreshToken: tokens.refreshToken });
    onSignedIn();
  };

  const form = el(
    "form",
    { class: "card", id: "login-form" },
    el("h1", {}, "Guardyn admin"),
    el("label", {}, "Username", username),
    el("label", {}, "Password", password),
    el("label", {}, "Device id", device),
    totpRow,
    submit,
    error,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    clearError(error);
    const attempt = async () => {
      if (ticket !== "") {
        const res = await clients.auth.completeMfaLogin({ mfaTicket: ticket, code: { case: "totpCode", value: totp.value.trim() } });
        signedIn(res.tokens);
        return;
      }
      const res = await clients.auth.login({ username: username.value.trim(), password: password.value, deviceId: Number(device.value) });
      if (res.outcome.case === "tokens") {
        signedIn(res.outcome.value);
      } else if (res.outcome.case === "mfaChallenge") {
        ticket = res.outcome.value.mfaTicket;
        totpRow.hidden = false;
        totp.focus();
      } else {
        throw new Error("the server returned neither tokens nor an MFA challenge");
      }
    };
    attempt()
      .catch((err: unknown) => showError(error, err))
      .finally(() => {
        submit.disabled = false;
      });
  });
  return form;
}
