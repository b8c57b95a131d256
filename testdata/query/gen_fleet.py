# Generates testdata/query/fleet.json. The fleet is written out by hand here;
# this script only adds the derived shadow fields (delta, hasDelta) consistently.
import json

def sh(version, reported=None, desired=None, age=None):
    reported = reported or {}
    desired = desired or {}
    delta = {k: v for k, v in desired.items() if reported.get(k) != v or type(reported.get(k)) != type(v)}
    s = {"version": version, "hasDelta": bool(delta)}
    if reported: s["reported"] = reported
    if desired: s["desired"] = desired
    if delta:
        s["delta"] = delta
        assert age is not None, reported
        s["deltaAgeSeconds"] = age
    else:
        assert age is None
    return s

def conn(connected, ts, reason=None):
    c = {"connected": connected, "timestamp": ts}
    if reason: c["disconnectReason"] = reason
    return c

T = []
def thing(name, typ, groups, ver, attrs, connectivity, shadow=None, named=None):
    t = {"thingName": name}
    if typ: t["thingTypeName"] = typ
    if groups: t["thingGroupNames"] = groups
    t["version"] = ver
    if attrs: t["attributes"] = attrs
    if connectivity: t["connectivity"] = connectivity
    if shadow: t["shadow"] = shadow
    if named: t["namedShadows"] = named
    T.append(t)

def at(loc=None, cust=None, hw=None, ring=None):
    a = {}
    if loc is not None: a["location"] = loc
    if cust: a["customer_id"] = cust
    if hw: a["hardware_rev"] = hw
    if ring: a["deployment_ring"] = ring
    return a

thing("sensor-001", "TempSensor", ["canary", "factory-A-line1"], 3, at("factory-A", "c-100", "B", "canary"),
      conn(True, 1700000100000),
      sh(12, {"firmware_version": "2.1.3", "battery": 85, "temp": 15.5, "mode": "eco", "tags": ["blue", "Outdoor"], "location": "bay-1"},
         {"firmware_version": "2.2.0"}, 7200),
      {"config": sh(3, {"x": 5, "interval": 30})})
thing("sensor-002", "TempSensor", ["factory-A-line1"], 1, at("factory-A", "c-100", "B", "broad"),
      conn(True, 1700000200000),
      sh(4, {"firmware_version": "2.1.3", "battery": 80, "temp": 10, "mode": "ECO", "readings": [1, 2, 3]}),
      {"config": sh(1, {"x": 5.0})})
thing("sensor-003", "TempSensor", ["factory-A-line2", "canary"], 2, at("factory-A", "c-101", "C", "canary"),
      conn(False, 1699990000000, "MQTT_KEEP_ALIVE_TIMEOUT"),
      sh(9, {"firmware_version": "2.1.10", "battery": 79.5, "temp": 20, "mode": "Performance"}, {"mode": "eco"}, 120),
      {"config": sh(2, {"x": "5"})})
thing("sensor-004", "TempSensor", ["factory-A-line2"], 1, at("factory-A", "c-101", "C", "broad"),
      conn(True, 1700000300000),
      sh(2, {"firmware_version": "2.2.0", "battery": 100, "temp": 20.0, "location": {"lat": 48.1, "lon": 11.5}}))
thing("sensor-005", "TempSensor", ["factory-B-line1", "canary"], 5, at("factory-B", "c-200", "B", "canary"),
      conn(True, 1700000400000),
      sh(30, {"firmware_version": "2.2.0-rc1", "battery": 5, "temp": -3, "tags": ["red"]}, {"firmware_version": "2.2.0"}, 90000))
thing("sensor-006", "TempSensor", ["factory-B-line1"], 1, at("factory-B", "c-200", "A", "early"),
      conn(False, 1699000000000, "CLIENT_INITIATED_DISCONNECT"),
      sh(7, {"firmware_version": "1.9", "battery": "90", "temp": 25}))
thing("sensor-007", "TempSensor", ["factory-B-line1"], 2, at("factory-B", "c-201", "A", "early"),
      conn(True, 1700000500000),
      sh(8, {"firmware_version": "v2.0.0", "battery": 60, "temp": 10.0, "tags": ["BLUE", "indoor"]},
         {"firmware_version": "2.2.0", "mode": "eco"}, 3600))
thing("sensor-008", "TempSensor", ["fleet-eu"], 1, at("hall 2", "c-300", "B", "broad"),
      conn(True, 1700000600000),
      sh(3, {"firmware_version": "10.0.1", "battery": 99, "temp": 12}))
thing("sensor-009", "TempSensor", ["fleet-eu"], 4, at("Hall 2", "c-300", "B", "broad"),
      conn(False, 1699500000000, "CONNECTION_LOST"),
      sh(5, {"firmware_version": "2.1.3+build7", "battery": 81, "temp": 19.99}))
thing("sensor-010", "TempSensor", ["fleet-eu", "canary"], 1, at("hall 3", "c-300", "C", "canary"),
      conn(True, 1700000700000),
      sh(6, {"firmware_version": "2.1.2", "battery": 80.5, "temp": 20.0001}, {"firmware_version": "2.1.3"}, 3601))
thing("sensor-011", "TempSensor", None, 1, at("warehouse", "c-400"),
      conn(True, 1700000800000),
      sh(2, {"firmware_version": "2.1.3", "battery": 1e2, "big": 123456789012345678901234567890}))
thing("sensor-012", "TempSensor", ["factory-A-line1"], 6, at("factory-A", "c-100", "A", "broad"),
      conn(False, 1699800000000, "MQTT_KEEP_ALIVE_TIMEOUT"),
      sh(11, {"firmware_version": "2.1.3", "battery": 0, "big": 123456789012345678901234567891}))
thing("gateway-01", "Gateway", ["factory-A", "gateways"], 9, at("factory-A", "c-100", "G2"),
      conn(True, 1700001000000),
      sh(40, {"firmware_version": "3.0.0", "uptime": 86400, "ports": [1883, 8883], "led": True}),
      {"ota": sh(4, {"state": "idle"})})
thing("gateway-02", "Gateway", ["factory-B", "gateways"], 2, at("factory-B", "c-200", "G2"),
      conn(True, 1700001100000),
      sh(41, {"firmware_version": "3.0.1", "led": False}),
      {"ota": sh(9, {"state": "downloading", "progress": 40}, {"state": "installed"}, 5000)})
thing("gateway-03", "Gateway", ["gateways", "fleet-us"], 1, at("warehouse", "c-400", "G1"),
      conn(False, 1698000000000, "CONNECTION_LOST"),
      sh(3, {"firmware_version": "2.9.9", "led": True}),
      {"config": sh(1, {"x": 7})})
thing("gateway-04", "Gateway", ["gateways", "fleet-us"], 3, at("Factory-A", "c-401", "G3"),
      conn(True, 1700001200000),
      sh(6, {"firmware_version": "3.0.0-beta.2", "sensors": [{"type": "co2", "ppm": 400}, {"type": "pm25", "ppm": 12}]}))
thing("gateway-05", "Gateway", ["gateways"], 1, at(cust="c-402", hw="G1"),
      conn(False, 0))
thing("tv-oled-1", "Display", ["home"], 1, at("living-room"),
      conn(True, 1700002000000),
      sh(2, {"firmware_version": "5.1", "power": "on", "volume": 12}))
thing("tv-plasma-1", "Display", ["home"], 1, at("living-room"),
      conn(False, 1690000000000, "CLIENT_INITIATED_DISCONNECT"),
      sh(1, {"firmware_version": "4.0", "power": "off"}))
thing("radio-fm-1", "Radio", ["home"], 2, at("kitchen"),
      conn(True, 1700002100000),
      sh(3, {"firmware_version": "1.0.0", "station": "Radio 1"}))
thing("radio-dab-1", "Radio", ["home", "canary"], 1, at("kitchen"),
      conn(True, 1700002200000),
      sh(4, {"firmware_version": "1.1.0", "station": "radio one"}))
thing("Camera-Lobby", "Camera", ["security"], 1, at("lobby"),
      conn(True, 1700003000000),
      sh(10, {"firmware_version": "2.1.3", "resolution": "1080p", "motion": True}))
thing("camera-dock", "Camera", ["security"], 2, at("dock"),
      conn(False, 1699900000000, "CONNECTION_LOST"),
      sh(12, {"firmware_version": "2.1.4", "resolution": "4K", "motion": False}))
thing("pump-7", "Pump", ["factory-A-line1"], 3, at("factory-A", "c-100", "P1"),
      conn(True, 1700004000000),
      sh(20, {"firmware_version": "2.0", "flow": 12.5, "pressure": 3}, {"pressure": 4}, 86400),
      {"config": sh(7, {"x": 5, "limits": {"max": 10}}, {"x": 6}, 30)})
thing("pump-8", "Pump", ["factory-A-line1"], 1, at("factory-A", "c-100", "P1"),
      conn(True, 1700004100000),
      sh(2, {"firmware_version": "2.0.0", "flow": 0}))
thing("valve-x1", "Valve", ["factory-B"], 2, at("factory-B", "c-200", "V1"),
      conn(False, 1699700000000, "CLIENT_INITIATED_DISCONNECT"),
      sh(5, {"firmware_version": "2.10.0", "open": True, "position": 45}))
thing("lamp-\u00e4", "Lamp", ["home"], 1, at("K\u00fcche"),
      conn(True, 1700005000000),
      sh(1, {"firmware_version": "1.0", "color": "WEISS"}))
thing("thermo-legacy", None, None, 1, at("warehouse"),
      conn(False, 1600000000000, "CONNECTION_LOST"))
thing("bare-thing", None, None, 1, None, None)
thing("Sensor-100", "TempSensor", ["canary"], 2, at("FACTORY-A", "c-100", "B", "canary"),
      conn(True, 1700006000000),
      sh(1, {"firmware_version": "2.1.3", "battery": 85.0, "temp": 15.50}))

assert len(T) == 30, len(T)
names = [t["thingName"] for t in T]
assert len(set(names)) == len(names)

def dump():
    # One thing per line keeps the file reviewable. Numbers are written as
    # in the source above, except for these, whose JSON text matters.
    out = json.dumps({"things": T}, ensure_ascii=False, indent=None)
    return out

if __name__ == "__main__":
    import sys
    lines = ['{"things": [']
    for i, t in enumerate(T):
        s = json.dumps(t, ensure_ascii=False)
        lines.append("  " + s + ("," if i < len(T) - 1 else ""))
    lines.append("]}")
    text = "\n".join(lines) + "\n"
    # Number spellings the tests rely on (json.dumps writes 100.0 and 5.0).
    assert '"battery": 100.0' in text and '"x": 5.0' in text and '"battery": 85.0' in text
    out = []
    for line in text.split("\n"):
        if '"sensor-011"' in line:
            line = line.replace('"battery": 100.0', '"battery": 1e2')
        if '"Sensor-100"' in line:
            line = line.replace('"temp": 15.5', '"temp": 15.50')
        out.append(line)
    text = "\n".join(out)
    assert '"battery": 1e2' in text and '"temp": 15.50' in text
    open(sys.argv[1], "w").write(text)
