// Every failure the API returns is shown with its gRPC code and the ErrorInfo reason Guardyn
// attaches (plus field violations for invalid input), so an operator can tell "not allowed"
// from "not found" from "the server is down".

import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";

export interface Described {
  code: string;
  reason: string;
  message: string;
}

/** `Code.PermissionDenied` → `PERMISSION_DENIED`, the name operators see in logs and grpcurl. */
function codeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();
}

export function describe(err: unknown): Described {
  if (err instanceof ConnectError) {
    const info = err.findDetails(ErrorInfoSchema)[0];
    const fields = err
      .findDetails(BadRequestSchema)
      .flatMap((b) => b.fieldViolations)
      .map((v) => `${v.field}: ${v.description}`);
    const message = [err.rawMessage, ...fields].filter((s) => s !== "").join("; ");
    return { code: codeName(err.code), reason: info?.reason ?? "", message };
  }
  return { code: "CLIENT", reason: "", message: err instanceof Error ? err.message : String(err) };
}

/** Show `err` in `target` (an element with role=alert). */
export function showError(target: HTMLElement, err: unknown): void {
  const d = describe(err);
  target.hidden = false;
  target.replaceChildren();
  const code = document.createElement("strong");
  code.className = "error-code";
  code.textContent = d.reason ? `${d.code} / ${d.reason}` : d.code;
  target.append(code, document.createTextNode(` ${d.message}`));
}

export function clearError(target: HTMLElement): void {
  target.hidden = true;
  target.replaceChildren();
}
