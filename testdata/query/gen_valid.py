# Oracle for testdata/query/valid.json: an independent Python rendering of the
# documented semantics, with each case's boolean structure written by hand.
import json, re, sys
from decimal import Decimal

fleet = json.load(open(sys.argv[1]), parse_float=Decimal, parse_int=Decimal)["things"]
NAMES = [t["thingName"] for t in fleet]

def flat(prefix, obj, vals, exists):
    if isinstance(obj, dict):
        exists.add(prefix)
        for k, v in obj.items():
            flat(prefix + "." + k, v, vals, exists)
    elif isinstance(obj, list):
        for v in obj:
            flat(prefix, v, vals, exists)
    elif obj is not None:
        vals.setdefault(prefix, []).append(obj)
        exists.add(prefix)

def shadow_fields(prefix, s, vals, exists):
    for k in ("version", "hasDelta", "deltaAgeSeconds"):
        if k in s:
            flat(prefix + k, s[k], vals, exists)
    for sec in ("reported", "desired", "delta"):
        if sec in s:
            for k, v in s[sec].items():
                flat(prefix + sec + "." + k, v, vals, exists)

def fields(t):
    vals, exists = {}, set()
    flat("thingName", t["thingName"], vals, exists)
    if "thingTypeName" in t: flat("thingTypeName", t["thingTypeName"], vals, exists)
    for g in t.get("thingGroupNames", []): flat("thingGroupNames", g, vals, exists)
    flat("registry.version", t["version"], vals, exists)
    for k, v in t.get("attributes", {}).items(): flat("attributes." + k, v, vals, exists)
    for k, v in t.get("connectivity", {}).items(): flat("connectivity." + k, v, vals, exists)
    if "shadow" in t: shadow_fields("shadow.", t["shadow"], vals, exists)
    for n, s in t.get("namedShadows", {}).items(): shadow_fields("shadow.name." + n + ".", s, vals, exists)
    return vals, exists

F = {t["thingName"]: fields(t) for t in fleet}

def text(v):
    if isinstance(v, bool): return "true" if v else "false"
    return str(v)

def isnum(s):
    return re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", s) is not None

VER = re.compile(r"v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9a-z-]+(?:\.[0-9a-z-]+)*))?(?:\+[0-9a-z-]+(?:\.[0-9a-z-]+)*)?")
def ver(s):
    m = VER.fullmatch(s.lower())
    if not m: return None
    return (int(m[1]), int(m[2] or 0), int(m[3] or 0), m[4])

def cmp_pre(a, b):
    if a == b: return 0
    if a is None: return 1
    if b is None: return -1
    pa, pb = a.split("."), b.split(".")
    for x, y in zip(pa, pb):
        if x == y: continue
        if x.isdigit() and y.isdigit(): return -1 if int(x) < int(y) else 1
        if x.isdigit(): return -1
        if y.isdigit(): return 1
        return -1 if x < y else 1
    return (len(pa) > len(pb)) - (len(pa) < len(pb))

def sgn(x): return (x > 0) - (x < 0)

def cmp(v, lit):
    if isinstance(v, Decimal) and isnum(lit): return sgn(v - Decimal(lit))
    if isinstance(v, bool):
        if lit.lower() in ("true", "false"): return sgn(int(v) - int(lit.lower() == "true"))
        a, b = text(v).lower(), lit.lower()
        return (a > b) - (a < b)
    va, vb = ver(text(v)), ver(lit)
    if va and vb:
        c = sgn((va[0] - vb[0]) or (va[1] - vb[1]) or (va[2] - vb[2]))
        return c or cmp_pre(va[3], vb[3])
    a, b = text(v).lower(), lit.lower()
    return (a > b) - (a < b)

def eq1(v, lit):
    if isinstance(v, Decimal): return isnum(lit) and v == Decimal(lit)
    if isinstance(v, bool): return lit.lower() in ("true", "false") and v == (lit.lower() == "true")
    return v.lower() == lit.lower()

def wild1(v, pat):
    rx = ""
    i = 0
    while i < len(pat):
        c = pat[i]
        if c == "\\": i += 1; rx += re.escape(pat[i])
        elif c == "*": rx += ".*"
        elif c == "?": rx += "."
        else: rx += re.escape(c)
        i += 1
    return re.fullmatch(rx, text(v), re.I | re.S) is not None

def V(t, f): return F[t][0].get(f, [])
def eq(f, lit): return lambda t: any(eq1(v, lit) for v in V(t, f))
def lt(f, lit): return lambda t: any(cmp(v, lit) < 0 for v in V(t, f))
def le(f, lit): return lambda t: any(cmp(v, lit) <= 0 for v in V(t, f))
def gt(f, lit): return lambda t: any(cmp(v, lit) > 0 for v in V(t, f))
def ge(f, lit): return lambda t: any(cmp(v, lit) >= 0 for v in V(t, f))
def rng(f, lo, hi, li=True, hi_incl=True):
    def ok(v):
        if lo != "*":
            c = cmp(v, lo)
            if c < 0 or (c == 0 and not li): return False
        if hi != "*":
            c = cmp(v, hi)
            if c > 0 or (c == 0 and not hi_incl): return False
        return True
    return lambda t: any(ok(v) for v in V(t, f))
def ex(f): return lambda t: f in F[t][1]
def wc(f, pat): return lambda t: any(wild1(v, pat) for v in V(t, f))
def AND(*ps): return lambda t: all(p(t) for p in ps)
def OR(*ps): return lambda t: any(p(t) for p in ps)
def NOT(p): return lambda t: not p(t)
ALL = lambda t: True

R = "shadow.reported."
C = [
    # The examples of the brief and issue 6.
    ("attributes.location:factory-A AND shadow.reported.firmware_version:2.1.3", AND(eq("attributes.location", "factory-A"), eq(R+"firmware_version", "2.1.3")), "string equality; 2.1.3+build7 is another string"),
    ("thingName:sensor-*", wc("thingName", "sensor-*"), "prefix wildcard, case-insensitive (Sensor-100)"),
    ("connectivity.connected:true", eq("connectivity.connected", "true"), "bool"),
    ("thingGroupNames:canary", eq("thingGroupNames", "canary"), "multi-valued field"),
    ("shadow.reported.battery>80", gt(R+"battery", "80"), "numbers by value; the string \"90\" compares as a version"),
    ("shadow.reported.temp:[10 TO 20]", rng(R+"temp", "10", "20"), "inclusive range; 10.0, 20.0 and 15.50 by value"),
    ("shadow.reported.temp:{10 TO 20]", rng(R+"temp", "10", "20", False, True), "exclusive low"),
    ("shadow.reported.temp:[10 TO 20}", rng(R+"temp", "10", "20", True, False), "exclusive high"),
    ("shadow.reported.temp:{10 TO 20}", rng(R+"temp", "10", "20", False, False), "both exclusive"),
    ("shadow.name.config.reported.x:5", eq("shadow.name.config.reported.x", "5"), "named shadow; 5 == 5.0; the string \"5\" too"),
    ("shadow.reported.firmware_version<2.2.0", lt(R+"firmware_version", "2.2.0"), "semver: 2.1.10 < 2.2.0, 2.2.0-rc1 < 2.2.0, 1.9 < 2.2.0, v2.0.0 < 2.2.0"),
    ("shadow.hasDelta:true", eq("shadow.hasDelta", "true"), "drift"),
    ("shadow.deltaAgeSeconds>3600", gt("shadow.deltaAgeSeconds", "3600"), "drift age, strict"),
    ("shadow.reported.location:*", ex(R+"location"), "existence, including an object value"),
    ("*", ALL, "every thing"),
    ("*:*", ALL, "Lucene spelling of every thing"),
    ('attributes.location:"hall 2"', eq("attributes.location", "hall 2"), "quoted value, case-insensitive"),
    # Boolean structure.
    ("NOT connectivity.connected:true", NOT(eq("connectivity.connected", "true")), "NOT includes things without connectivity"),
    ("thingName:tv-oled-1 OR thingName:radio-fm-1", OR(eq("thingName", "tv-oled-1"), eq("thingName", "radio-fm-1")), "OR"),
    ("attributes.location:factory-A thingTypeName:Pump", AND(eq("attributes.location", "factory-A"), eq("thingTypeName", "Pump")), "implicit AND"),
    ("thingGroupNames:home -thingTypeName:Radio", AND(eq("thingGroupNames", "home"), NOT(eq("thingTypeName", "Radio"))), "exclusion"),
    ("(thingTypeName:Radio OR thingTypeName:Display) AND connectivity.connected:true", AND(OR(eq("thingTypeName", "Radio"), eq("thingTypeName", "Display")), eq("connectivity.connected", "true")), "parentheses"),
    ("thingTypeName:Radio OR thingTypeName:Display connectivity.connected:true", OR(eq("thingTypeName", "Radio"), AND(eq("thingTypeName", "Display"), eq("connectivity.connected", "true"))), "AND (implicit) binds tighter than OR"),
    ("NOT thingTypeName:TempSensor AND connectivity.connected:true", AND(NOT(eq("thingTypeName", "TempSensor")), eq("connectivity.connected", "true")), "NOT binds tightest"),
    ("NOT (thingTypeName:TempSensor OR thingTypeName:Gateway)", NOT(OR(eq("thingTypeName", "TempSensor"), eq("thingTypeName", "Gateway"))), "NOT of a group"),
    ("-(-thingName:pump-7)", eq("thingName", "pump-7"), "double exclusion"),
    ("NOT NOT thingName:pump-7 OR thingName:pump-8", OR(eq("thingName", "pump-7"), eq("thingName", "pump-8")), "NOT NOT"),
    ("thingName:(tv* OR radio*)", OR(wc("thingName", "tv*"), wc("thingName", "radio*")), "field group"),
    ("thingName:(tv* AND -tv-plasma*)", AND(wc("thingName", "tv*"), NOT(wc("thingName", "tv-plasma*"))), "AWS's field-group example"),
    ("thingGroupNames:(canary OR home) -connectivity.connected:true", AND(OR(eq("thingGroupNames", "canary"), eq("thingGroupNames", "home")), NOT(eq("connectivity.connected", "true"))), "group then exclusion"),
    ("shadow.reported.battery:(>90 OR [0 TO 5])", OR(gt(R+"battery", "90"), rng(R+"battery", "0", "5")), "comparison and range inside a field group"),
    ("shadow.reported.tags:(blue AND indoor)", AND(eq(R+"tags", "blue"), eq(R+"tags", "indoor")), "each value may match a different array element"),
    ("NOT *", NOT(ALL), "nothing"),
    ("thingName:* AND NOT thingGroupNames:*", NOT(ex("thingGroupNames")), "things in no group"),
    # Fields.
    ("thingTypeName:tempsensor", eq("thingTypeName", "tempsensor"), "case-insensitive value"),
    ("thingTypeName:*", ex("thingTypeName"), "existence of a registry field"),
    ("registry.thingTypeName:Camera", eq("thingTypeName", "Camera"), "AWS alias of thingTypeName"),
    ("registry.version>=5", ge("registry.version", "5"), "registry version"),
    ("attributes.customer_id:c-10?", wc("attributes.customer_id", "c-10?"), "? wildcard"),
    ("attributes.location:FACTORY-a", eq("attributes.location", "FACTORY-a"), "ASCII case folding"),
    ("attributes.location:k\u00dcCHE", eq("attributes.location", "k\u00fcche"), "non-ASCII case folding"),
    ("attributes.location:hall?2", wc("attributes.location", "hall?2"), "? matches the space"),
    ("attributes.location:hall\\ 2", eq("attributes.location", "hall 2"), "escaped space in a bare value"),
    ('attributes.location:["hall 2" TO "hall 3"]', rng("attributes.location", "hall 2", "hall 3"), "string range with quoted bounds"),
    ("attributes.nope:x", lambda t: False, "absent attribute"),
    ("connectivity.connected:false", eq("connectivity.connected", "false"), "false is not absent"),
    ("connectivity.connected:FALSE", eq("connectivity.connected", "false"), "bool literal in any case"),
    ("connectivity.timestamp<1699000000000", lt("connectivity.timestamp", "1699000000000"), "ms epoch"),
    ("connectivity.timestamp<=1699000000000", le("connectivity.timestamp", "1699000000000"), "<= includes equal"),
    ("connectivity.timestamp > 1700004000000", gt("connectivity.timestamp", "1700004000000"), "spaces around the operator"),
    ("connectivity.timestamp:[1700000000000 TO 1700001000000]", rng("connectivity.timestamp", "1700000000000", "1700001000000"), "numeric range"),
    ("connectivity.disconnectReason:*", ex("connectivity.disconnectReason"), "AWS example"),
    ("connectivity.disconnectReason:CONNECTION_LOST", eq("connectivity.disconnectReason", "CONNECTION_LOST"), "enum-like string"),
    ("connectivity.disconnectReason:mqtt_*", wc("connectivity.disconnectReason", "mqtt_*"), "wildcard, case-insensitive"),
    ("shadow.version:[30 TO *]", rng("shadow.version", "30", "*"), "unbounded high"),
    ("shadow.version:*", ex("shadow.version"), "things with a classic shadow"),
    ("shadow.hasDelta:false", eq("shadow.hasDelta", "false"), "converged shadows only, not shadowless things"),
    ("NOT shadow.hasDelta:true", NOT(eq("shadow.hasDelta", "true")), "NOT includes shadowless things"),
    ("shadow.deltaAgeSeconds>=3600", ge("shadow.deltaAgeSeconds", "3600"), "boundary 3600 included"),
    ("shadow.hasDelta:true AND NOT shadow.deltaAgeSeconds>3600", AND(eq("shadow.hasDelta", "true"), NOT(gt("shadow.deltaAgeSeconds", "3600"))), "recent drift"),
    ("shadow.name.ota.hasDelta:true", eq("shadow.name.ota.hasDelta", "true"), "named shadow drift"),
    ("shadow.name.config.deltaAgeSeconds<60", lt("shadow.name.config.deltaAgeSeconds", "60"), "named shadow drift age"),
    ("shadow.name.config.reported.limits.max:10", eq("shadow.name.config.reported.limits.max", "10"), "nested path in a named shadow"),
    ("shadow.name.ota.reported.state:idle OR shadow.name.ota.desired.state:installed", OR(eq("shadow.name.ota.reported.state", "idle"), eq("shadow.name.ota.desired.state", "installed")), "named reported and desired"),
    ("shadow.delta.firmware_version:2.2.0", eq("shadow.delta.firmware_version", "2.2.0"), "delta section"),
    ("shadow.desired.mode:eco", eq("shadow.desired.mode", "eco"), "desired section"),
    ("shadow.delta.mode:*", ex("shadow.delta.mode"), "existence in delta"),
    ("shadow.reported.mode:eco OR shadow.desired.mode:eco", OR(eq(R+"mode", "eco"), eq("shadow.desired.mode", "eco")), "ECO matches eco"),
    # Values: numbers, bools, versions, arrays.
    ("shadow.reported.battery:100", eq(R+"battery", "100"), "100 == 1e2"),
    ("shadow.reported.battery:85", eq(R+"battery", "85"), "85 == 85.0"),
    ("shadow.reported.battery:90", eq(R+"battery", "90"), "a string \"90\" equals the literal as text"),
    ("shadow.reported.battery:>=99", ge(R+"battery", "99"), "field:>=v form"),
    ("shadow.reported.battery:[* TO 5]", rng(R+"battery", "*", "5"), "unbounded low"),
    ("shadow.reported.battery:{80 TO *}", rng(R+"battery", "80", "*", False, False), "exclusive low, unbounded high"),
    ("shadow.reported.temp:20", eq(R+"temp", "20"), "20 == 20.0, != 20.0001"),
    ("shadow.reported.temp<0", lt(R+"temp", "0"), "negative number"),
    ("shadow.reported.temp:[-5 TO 0]", rng(R+"temp", "-5", "0"), "negative bound"),
    ("shadow.reported.temp:20.*", wc(R+"temp", "20.*"), "wildcard on a number's JSON text"),
    ("shadow.reported.big:123456789012345678901234567890", eq(R+"big", "123456789012345678901234567890"), "exact beyond float64"),
    ("shadow.reported.big>123456789012345678901234567890", gt(R+"big", "123456789012345678901234567890"), "exact order beyond float64"),
    ("shadow.reported.flow:0.0", eq(R+"flow", "0.0"), "zero spelled differently"),
    ("shadow.reported.position:[40 TO 50}", rng(R+"position", "40", "50", True, False), "integer range"),
    ("shadow.reported.led:true", eq(R+"led", "true"), "bool in the shadow"),
    ("shadow.reported.led:FALSE", eq(R+"led", "false"), "bool literal in any case"),
    ("NOT shadow.reported.led:true", NOT(eq(R+"led", "true")), "NOT over a bool"),
    ("shadow.reported.firmware_version:2.1.3", eq(R+"firmware_version", "2.1.3"), "equality is textual for strings"),
    ("shadow.reported.firmware_version:2.1.3*", wc(R+"firmware_version", "2.1.3*"), "wildcard catches build metadata"),
    ("shadow.reported.firmware_version<=2.1.3", le(R+"firmware_version", "2.1.3"), "build metadata ignored in order"),
    ("shadow.reported.firmware_version>=2.10.0", ge(R+"firmware_version", "2.10.0"), "2.9.9 < 2.10.0 < 3.0.0-beta.2 < 10.0.1"),
    ("shadow.reported.firmware_version:[2.1.0 TO 2.2.0}", rng(R+"firmware_version", "2.1.0", "2.2.0", True, False), "version range"),
    ("shadow.reported.firmware_version>v2.1.9", gt(R+"firmware_version", "v2.1.9"), "v prefix on the literal"),
    ("shadow.reported.firmware_version:2.2.0-RC1", eq(R+"firmware_version", "2.2.0-rc1"), "case-insensitive equality"),
    ("shadow.reported.firmware_version:[2.2.0-RC1 TO 2.2.0-rc1]", rng(R+"firmware_version", "2.2.0-rc1", "2.2.0-rc1"), "prerelease compared case-insensitively"),
    ("thingTypeName:(Pump OR Valve) AND shadow.reported.firmware_version<2.9", AND(OR(eq("thingTypeName", "Pump"), eq("thingTypeName", "Valve")), lt(R+"firmware_version", "2.9")), "two-part version literal"),
    ("shadow.reported.tags:blue", eq(R+"tags", "blue"), "any array element, case-insensitive"),
    ("shadow.reported.readings:2", eq(R+"readings", "2"), "number array"),
    ("shadow.reported.ports>8000", gt(R+"ports", "8000"), "comparison over an array"),
    ("shadow.reported.sensors.type:pm25", eq(R+"sensors.type", "pm25"), "objects inside arrays are flattened"),
    ("shadow.reported.location.lat>48", gt(R+"location.lat", "48"), "path into an object"),
    ("shadow.reported.station:radio*", wc(R+"station", "radio*"), "wildcard over values with spaces"),
    ('shadow.reported.station:"Radio 1"', eq(R+"station", "Radio 1"), "quoted value with a space"),
    ("shadow.reported.resolution:4k", eq(R+"resolution", "4k"), "case"),
    ("thingName:s*-0?1", wc("thingName", "s*-0?1"), "* and ? inside a pattern"),
    ("thingName:[radio TO sensor-002]", rng("thingName", "radio", "sensor-002"), "string range, case-insensitive"),
    ("thingName:LAMP-\u00c4", eq("thingName", "lamp-\u00e4"), "non-ASCII name, folded"),
    ('thingName:"Camera-Lobby" OR thingName:CAMERA-DOCK', OR(eq("thingName", "Camera-Lobby"), eq("thingName", "camera-dock")), "quoted and bare"),
    ("thingName:*", ALL, "every thing has a name"),
    ("thingGroupNames:factory-A*", wc("thingGroupNames", "factory-A*"), "wildcard over group names"),
    ("attributes.deployment_ring:canary AND NOT shadow.reported.firmware_version:2.2.0", AND(eq("attributes.deployment_ring", "canary"), NOT(eq(R+"firmware_version", "2.2.0"))), "canary ring not yet on 2.2.0"),
    ("shadow.reported.nonexistent:* OR shadow.name.cfg.reported.x:5", lambda t: False, "absent paths and shadows"),
]

out = []
seen = set()
for q, pred, note in C:
    assert q not in seen, q
    seen.add(q)
    m = sorted(n for n in NAMES if pred(n))
    out.append({"query": q, "matches": m, "note": note})
lines = ["["]
for i, c in enumerate(out):
    lines.append("  " + json.dumps(c, ensure_ascii=False) + ("," if i < len(out) - 1 else ""))
lines.append("]")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print(len(out), "cases")
for c in out:
    print(len(c["matches"]), c["query"])
