// Sign-in: password first, then the TOTP code when the account has a second factor. A wrong
// code keeps the challenge (the server allows a few attempts per ticket) and shows the
// refusal; an expired or used-up challenge sends the admin back to the password step.

import type { Clients } from "../api.js";
import { setSession } from "../api.js";
import { clearError, describe, showError } from "../errors.js";
import { el, errorBox } from "../dom.js";
import type { Tokens } from "../gen/guardyn/auth/v1/tokens_pb.js";

export function loginPage(clients: Clients, onSignedIn: () => void): HTMLElement {
  const error = errorBox();
  const username = el("input", { id: "username", name: "username", autocomplete: "username", required: true });
  const password = el("input", { id: "password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const device = el("input", { id: "device", name: "device", type: "number", min: "1", max: "127", value: "1" });
  const totp = el("input", {
    id: "totp",
    name: "totp",
    inputmode: "numeric",
    autocomplete: "one-time-code",
    pattern: "[0-9]{6}",
    maxlength: "6",
    title: "six digits",
  });
  const totpRow = el(
    "label",
    { id: "totp-step" },
    "TOTP code",
    totp,
    el("small", { class: "hint" }, "The six-digit code your authenticator app shows for this account."),
  );
  const back = el("button", { type: "button", id: "mfa-back" }, "Use another account");
  totpRow.hidden = true;
  back.hidden = true;
  const submit = el("button", { type: "submit", id: "sign-in" }, "Sign in");
  let ticket = "";

  // The password step's fields stay visible (the admin sees who is signing in) but cannot
  // change under a ticket issued for them.
  const passwordStep = () => {
    ticket = "";
    totp.value = "";
    totp.required = false;
    totpRow.hidden = true;
    back.hidden = true;
    for (const input of [username, password, device]) input.readOnly = false;
    submit.textContent = "Sign in";
    password.value = "";
    password.focus();
  };
  const codeStep = (mfaTicket: string) => {
    ticket = mfaTicket;
    for (const input of [username, password, device]) input.readOnly = true;
    totpRow.hidden = false;
    back.hidden = false;
    totp.required = true;
    submit.textContent = "Verify code";
    totp.focus();
  };
  back.addEventListener("click", () => {
    clearError(error);
    passwordStep();
  });

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
    back,
    error,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    clearError(error);
    const inCodeStep = ticket !== "";
    const attempt = async () => {
      if (inCodeStep) {
        const code = totp.value.trim();
        if (!/^[0-9]{6}$/.test(code)) throw new Error("the TOTP code is six digits");
        const res = await clients.auth.completeMfaLogin({ mfaTicket: ticket, code: { case: "totpCode", value: code } });
        signedIn(res.tokens);
        return;
      }
      const res = await clients.auth.login({ username: username.value.trim(), password: password.value, deviceId: Number(device.value) });
      if (res.outcome.case === "tokens") {
        signedIn(res.outcome.value);
      } else if (res.outcome.case === "mfaChallenge") {
        codeStep(res.outcome.value.mfaTicket);
      } else {
        throw new Error("the server returned neither tokens nor an MFA challenge");
      }
    };
    attempt()
      .catch((err: unknown) => {
        showError(error, err);
        if (!inCodeStep) return;
        // The challenge expired or ran out of attempts: only a new password step helps.
        if (describe(err).reason === "CODE_EXPIRED") {
          passwordStep();
          return;
        }
        totp.value = "";
        totp.focus();
      })
      .finally(() => {
        submit.disabled = false;
      });
  });
  return form;
}
