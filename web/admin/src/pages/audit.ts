// The audit log, newest first, and a chain verification from the checkpoint to the head.

import type { Clients } from "../api.js";
import { clearError, showError } from "../errors.js";
import { el, errorBox, table, time } from "../dom.js";
import { AuditProblem, ListOrder } from "../gen/guardyn/admin/v1/audit_pb.js";

export function auditPage(clients: Clients): HTMLElement {
  const error = errorBox();
  const result = el("p", { id: "verify-result", role: "status" });
  const list = el("div", { id: "audit-list" });
  const verify = el("button", { id: "verify-chain" }, "Verify chain");

  const run = (what: () => Promise<void>) => {
    clearError(error);
    what().catch((err: unknown) => showError(error, err));
  };
  const load = async () => {
    const res = await clients.audit.listAuditEntries({ pageSize: 100, order: ListOrder.NEWEST_FIRST });
    list.replaceChildren(
      table(
        ["Seq", "Time", "Kind", "Account", "Actor", "Reason", "Detail"],
        res.entries.map((e) => [String(e.seq), time(e.time), e.kind, e.accountId, e.actorAccountId, e.reason, e.detail]),
      ),
    );
  };
  verify.addEventListener("click", () =>
    run(async () => {
      result.textContent = "verifying…";
      result.className = "";
      const res = await clients.audit.verifyAuditLog({});
      if (res.ok) {
        result.textContent = `OK: ${res.entriesChecked} entries checked (seq ${res.firstSeq}..${res.lastSeq})`;
        result.className = "badge ok";
      } else {
        const b = res.broken;
        result.textContent = `BROKEN at seq ${b?.seq ?? "?"}: ${AuditProblem[b?.problem ?? 0]} ${b?.description ?? ""}`;
        result.className = "badge bad";
      }
    }),
  );
  run(load);
  return el("section", { id: "audit-page" }, el("h1", {}, "Audit log"), el("div", { class: "toolbar" }, verify, result), error, list);
}
