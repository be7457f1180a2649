// The connection to Guardyn's public port over gRPC-web. Tokens live in this module's memory
// only (never localStorage or cookies): reloading the page signs the admin out.

import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { DescService } from "@bufbuild/protobuf";
import { AuthService } from "./gen/guardyn/auth/v1/auth_pb.js";
import { AdminUserService } from "./gen/guardyn/admin/v1/users_pb.js";
import { AuditService } from "./gen/guardyn/admin/v1/audit_pb.js";
import { SecurityEventService } from "./gen/guardyn/admin/v1/security_pb.js";
import { MonitoringService } from "./gen/guardyn/admin/v1/monitoring_pb.js";
import { describe } from "./errors.js";

export interface Session {
  username: string;
  accessToken: string;
  refreshToken: string;
}

let session: Session | undefined;

export function currentSession(): Session | undefined {
  return session;
}

export function setSession(next: Session | undefined): void {
  session = next;
}

/** Renews the session's tokens (set by `connect`); one renewal at a time. */
let renew: (() => Promise<void>) | undefined;
let renewing: Promise<void> | undefined;

export function expired(err: unknown): boolean {
  const d = describe(err);
  return d.code === "UNAUTHENTICATED" && d.reason === "TOKEN_EXPIRED";
}

/** Renew the tokens now (a stream that ended with TOKEN_EXPIRED, before it reconnects). */
export async function renewSession(): Promise<void> {
  if (!renew) return;
  renewing ??= renew().finally(() => {
    renewing = undefined;
  });
  await renewing;
}

// Access tokens last minutes: a unary call refused with TOKEN_EXPIRED is retried once after
// the refresh token renewed them. A stream that ends that way shows the error (the page offers
// to reconnect, which then renews).
const bearer: Interceptor = (next) => async (req) => {
  if (!session) return next(req);
  req.header.set("authorization", `Bearer ${session.accessToken}`);
  try {
    return await next(req);
  } catch (err: unknown) {
    if (req.stream || !expired(err)) throw err;
    await renewSession();
    req.header.set("authorization", `Bearer ${session?.accessToken ?? ""}`);
    return next(req);
  }
};

export interface Clients {
  api: string;
  auth: Client<typeof AuthService>;
  users: Client<typeof AdminUserService>;
  audit: Client<typeof AuditService>;
  security: Client<typeof SecurityEventService>;
  monitoring: Client<typeof MonitoringService>;
}

/** The API URL the console server configured (`admin.console_api_url`, or derived). */
async function apiUrl(): Promise<string> {
  const res = await fetch("config.json", { cache: "no-store" });
  if (!res.ok) {
    throw new Error(`config.json: HTTP ${res.status}`);
  }
  const body: unknown = await res.json();
  const api = (body as { api?: unknown }).api;
  if (typeof api !== "string" || api === "") {
    throw new Error("config.json names no API URL");
  }
  return api;
}

export async function connect(): Promise<Clients> {
  const api = await apiUrl();
  const transport = createGrpcWebTransport({
    baseUrl: api,
    useBinaryFormat: true,
    interceptors: [bearer],
  });
  const client = <S extends DescService>(s: S) => createClient(s, transport);
  const auth = client(AuthService);
  renew = async () => {
    const current = session;
    if (!current) return;
    const res = await auth.refreshSession({ refreshToken: current.refreshToken });
    if (!res.tokens) throw new Error("the server renewed no tokens");
    session = { ...current, accessToken: res.tokens.accessToken, refreshToken: res.tokens.refreshToken };
  };
  return {
    api,
    auth,
    users: client(AdminUserService),
    audit: client(AuditService),
    security: client(SecurityEventService),
    monitoring: client(MonitoringService),
  };
}
