#!/usr/bin/env python3
"""Layout checks ARCHITECTURE.md promises, run by .ci/run:
1. no import circle between files of one crate (use-trees, inline crate::/super:: paths,
   re-exports followed to the defining module; comments ignored);
2. in services/*, wire types (guardyn_proto) only in grpc/ and lib.rs.
Usage: check-layout.py CRATE_SRC_DIR  (exit 1 and a report on a violation)."""
import os, re, sys

src = sys.argv[1]
files = {}  # module path tuple -> file
for root, _, fs in os.walk(src):
    for f in fs:
        if not f.endswith('.rs'): continue
        p = os.path.join(root, f)
        rel = os.path.relpath(p, src)[:-3].split(os.sep)
        if rel in (['lib'], ['main']): mod = ()
        elif rel[-1] == 'mod': mod = tuple(rel[:-1])
        else: mod = tuple(rel)
        files[mod] = p

def strip_comments(text):
    text = re.sub(r'/\*.*?\*/', '', text, flags=re.S)
    return '\n'.join(re.sub(r'//.*', '', l) for l in text.split('\n'))

texts = {m: strip_comments(open(p).read()) for m, p in files.items()}

def children(mod):
    return {k[-1] for k in files if len(k) == len(mod) + 1 and k[:len(mod)] == mod}

def expand(tree):
    """expand a use tree string into list of paths (lists of segments)"""
    tree = tree.strip()
    # split top-level prefix::{...}
    depth = 0
    for i, c in enumerate(tree):
        if c == '{':
            prefix = tree[:i].rstrip(':').strip()
            inner = tree[i+1:tree.rindex('}')]
            parts, d, cur = [], 0, ''
            for ch in inner:
                if ch == '{': d += 1
                if ch == '}': d -= 1
                if ch == ',' and d == 0: parts.append(cur); cur = ''
                else: cur += ch
            parts.append(cur)
            out = []
            for p in parts:
                if not p.strip(): continue
                for sub in expand(p):
                    out.append(([s for s in prefix.split('::') if s] if prefix else []) + sub)
            return out
    tree = re.sub(r'\s+as\s+\w+$', '', tree)
    return [[s.strip() for s in tree.split('::') if s.strip()]]

# re-exports: module -> name -> full path (absolute module tuple + item)
def uses_of(mod):
    t = texts[mod]
    res = []  # (is_pub, base_mod, segments)
    for m in re.finditer(r'(?:^|\n)\s*(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);', t):
        for segs in expand(m.group(2)):
            res.append((bool(m.group(1)), m.start(), segs))
    return res

def inline_base(mod, pos):
    # inside an inline `mod x {` block opened before pos?  treat as a child level
    t = texts[mod]
    for m in re.finditer(r'\bmod\s+\$?\w+\s*\{', t):
        if m.start() < pos: return True
    return False

def resolve_start(mod, segs, pos):
    base = list(mod)
    inl = inline_base(mod, pos)
    i = 0
    if not segs: return None
    if segs[0] == 'crate': base = []; i = 1
    elif segs[0] in ('super', 'self'):
        while i < len(segs) and segs[i] in ('super', 'self'):
            if segs[i] == 'super':
                if inl: inl = False
                else: base = base[:-1]
            i += 1
    elif segs[0] in children(mod): pass
    else: return None
    return tuple(base), segs[i:]

reexports = {}
for mod in files:
    for is_pub, pos, segs in uses_of(mod):
        if not is_pub or segs[-1] == '*': continue
        r = resolve_start(mod, segs, pos)
        if r: reexports.setdefault(mod, {})[segs[-1]] = r

def locate(base, rest, seen=0):
    cur = base
    for j, s in enumerate(rest):
        if s == '*': return cur
        if s in children(cur): cur = cur + (s,); continue
        # item s in cur: follow re-export
        if seen < 10 and s in reexports.get(cur, {}):
            b, r = reexports[cur][s]
            return locate(b, r, seen + 1)
        return cur
    return cur

edges = {m: set() for m in files}
for mod in files:
    refs = []
    for _, pos, segs in uses_of(mod): refs.append((pos, segs))
    for m in re.finditer(r'\b(?:crate|super|self)(?:::\w+)+', texts[mod]):
        refs.append((m.start(), m.group(0).split('::')))
    for pos, segs in refs:
        r = resolve_start(mod, segs, pos)
        if not r: continue
        tgt = locate(*r)
        if tgt != mod and tgt in files: edges[mod].add(tgt)

name = lambda m: os.path.relpath(files[m], src)
if os.environ.get("VERBOSE"):
    for m in sorted(edges, key=name):
        print(f"{name(m):28} -> {', '.join(sorted(name(t) for t in edges[m]))}")
# SCCs (Tarjan)
idx, low, st, on, out, c = {}, {}, [], set(), [], [0]
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: out.append(comp)
for v in edges:
    if v not in idx: sc(v)
bad = False
for comp in out:
    bad = True
    print(f"{src}: import circle: " + ' , '.join(sorted(name(m) for m in comp)))
if os.path.basename(os.path.dirname(os.path.abspath(src))) and '/services/' in os.path.abspath(src) + '/':
    for m, p in files.items():
        rel = name(m)
        if 'guardyn_proto' in texts[m] and not (rel.startswith('grpc') or rel == 'lib.rs'):
            bad = True
            print(f"{src}: wire types outside grpc/: {rel}")
sys.exit(1 if bad else 0)
