// Users: search by username prefix, suspend/unsuspend with a reason, list and end sessions.

import type { Clients } from "../api.js";
import { clearError, showError } from "../errors.js";
import { el, errorBox, table, time } from "../dom.js";
import { Role } from "../gen/guardyn/admin/v1/roles_pb.js";
import type { AccountSummary } from "../gen/guardyn/admin/v1/users_pb.js";

export function usersPage(clients: Clients): HTMLElement {
  const error = errorBox();
  const status = el("p", { class: "status", id: "users-status", role: "status" });
  const search = el("input", { id: "user-search", type: "search", placeholder: "username prefix" });
  const reason = el("input", { id: "reason", placeholder: "reason (required for changes)", maxlength: "500" });
  const list = el("div", { id: "users-list" });
  const sessions = el("div", { id: "sessions" });

  const run = (what: () => Promise<void>) => {
    clearError(error);
    what().catch((err: unknown) => showError(error, err));
  };

  const load = async () => {
    const res = await clients.users.listAccounts({ pageSize: 100, usernamePrefix: search.value.trim().toLowerCase() });
    list.replaceChildren(table(["Username", "Account", "Roles", "State", "Devices", "MFA", ""], res.accounts.map(row)));
  };

  const row = (a: AccountSummary): (Node | string)[] => {
    const toggle = a.suspended
      ? el("button", { "data-action": "unsuspend", "data-user": a.username }, "Unsuspend")
      : el("button", { "data-action": "suspend", "data-user": a.username }, "Suspend");
    toggle.addEventListener("click", () =>
      run(async () => {
        if (a.suspended) {
          await clients.users.unsuspendAccount({ accountId: a.accountId, reason: reason.value });
          status.textContent = `${a.username} unsuspended`;
        } else {
          const res = await clients.users.suspendAccount({ accountId: a.accountId, reason: reason.value });
          status.textContent = `${a.username} suspended (${res.sessionsRevoked} session(s) revoked)`;
        }
        await load();
      }),
    );
    const show = el("button", { "data-action": "sessions", "data-user": a.username }, "Sessions");
    show.addEventListener("click", () => run(() => showSessions(a)));
    return [
      a.username,
      el("code", {}, a.accountId),
      a.roles.map((r) => Role[r]).join(", "),
      el("span", { class: a.suspended ? "badge bad" : "badge ok", "data-state": a.username }, a.suspended ? "suspended" : "active"),
      String(a.deviceCount),
      a.mfaEnabled ? "on" : "off",
      el("span", {}, toggle, show),
    ];
  };

  const showSessions = async (a: AccountSummary) => {
    const res = await clients.users.listSessions({ accountId: a.accountId });
    const end = (sessionId: string) =>
      run(async () => {
        const r = await clients.users.terminateSessions({ accountId: a.accountId, sessionId, reason: reason.value });
        status.textContent = `${r.sessionsRevoked} session(s) of ${a.username} terminated`;
        await showSessions(a);
      });
    const all = el("button", { "data-action": "terminate-all" }, "Terminate all");
    all.addEventListener("click", () => end(""));
    sessions.replaceChildren(
      el("h2", {}, `Sessions of ${a.username}`),
      table(
        ["Session", "Device", "Created", "Last refresh", "Expires", ""],
        res.sessions.map((s) => {
          const b = el("button", { "data-action": "terminate" }, "Terminate");
          b.addEventListener("click", () => end(s.sessionId));
          return [el("code", {}, s.sessionId), String(s.deviceId), time(s.createdAt), time(s.lastRefreshedAt), time(s.expiresAt), b];
        }),
      ),
      all,
    );
  };

  const form = el("form", { class: "toolbar" }, search, el("button", { type: "submit" }, "Search"), reason);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    run(load);
  });
  run(load);
  return el("section", { id: "users-page" }, el("h1", {}, "Users"), form, error, status, list, sessions);
}
