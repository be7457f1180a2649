// The console shell: sign-in, then a navigation bar over the pages. Each page is rebuilt when
// opened; leaving the monitoring page aborts its stream.

import { connect, currentSession, setSession, type Clients } from "./api.js";
import { el, errorBox } from "./dom.js";
import { showError } from "./errors.js";
import { loginPage } from "./pages/login.js";
import { usersPage } from "./pages/users.js";
import { auditPage } from "./pages/audit.js";
import { securityPage } from "./pages/security.js";
import { monitoringPage } from "./pages/monitoring.js";

type PageName = "users" | "audit" | "security" | "monitoring";

function start(root: HTMLElement, clients: Clients): void {
  let leave = new AbortController();

  const open = (page: PageName) => {
    leave.abort();
    leave = new AbortController();
    const body =
      page === "users"
        ? usersPage(clients)
        : page === "audit"
          ? auditPage(clients)
          : page === "security"
            ? securityPage(clients)
            : monitoringPage(clients, leave.signal);
    const link = (name: PageName, label: string) => {
      const b = el("button", { class: name === page ? "nav current" : "nav", id: `nav-${name}` }, label);
      b.addEventListener("click", () => open(name));
      return b;
    };
    const signOut = el("button", { class: "nav", id: "sign-out" }, "Sign out");
    signOut.addEventListener("click", () => {
      leave.abort();
      clients.auth.logout({ allSessions: false }).catch(() => undefined);
      setSession(undefined);
      root.replaceChildren(loginPage(clients, () => open("users")));
    });
    root.replaceChildren(
      el(
        "nav",
        {},
        link("users", "Users"),
        link("audit", "Audit log"),
        link("security", "Security events"),
        link("monitoring", "Monitoring"),
        el("span", { class: "who" }, currentSession()?.username ?? ""),
        signOut,
      ),
      el("main", {}, body),
    );
  };
  root.replaceChildren(loginPage(clients, () => open("users")));
}

const root = document.getElementById("app");
if (root) {
  connect()
    .then((clients) => start(root, clients))
    .catch((err: unknown) => {
      const box = errorBox();
      showError(box, err);
      root.replaceChildren(box);
    });
}
