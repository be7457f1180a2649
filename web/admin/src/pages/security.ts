// Security events reported by clients (failed unlocks, tampering...), newest first.

import type { Clients } from "../api.js";
import { clearError, showError } from "../errors.js";
import { el, errorBox, table, time } from "../dom.js";
import { ListOrder } from "../gen/guardyn/admin/v1/audit_pb.js";
import { SecurityEventType, SecuritySeverity } from "../gen/guardyn/admin/v1/security_pb.js";

export function securityPage(clients: Clients): HTMLElement {
  const error = errorBox();
  const list = el("div", { id: "security-list" });
  clearError(error);
  clients.security
    .listSecurityEvents({ pageSize: 100, order: ListOrder.NEWEST_FIRST })
    .then((res) => {
      list.replaceChildren(
        table(
          ["Received", "Type", "Severity", "Account", "Device", "Details"],
          res.events.map((e) => [
            time(e.receivedAt),
            SecurityEventType[e.type],
            SecuritySeverity[e.severity],
            e.accountId,
            String(e.deviceId),
            Object.entries(e.details)
              .map(([k, v]) => `${k}=${v}`)
              .join(" "),
          ]),
        ),
      );
    })
    .catch((err: unknown) => showError(error, err));
  return el("section", { id: "security-page" }, el("h1", {}, "Security events"), error, list);
}
