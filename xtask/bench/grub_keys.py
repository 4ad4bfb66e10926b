#!/usr/bin/env python3
"""How fast the test guest's GRUB takes keys under TCG (docs/benchmarks.md): boot ISO, open the editor of the
first menu entry, type KEYS characters via QMP send-key PACE_MS apart (HOLD_MS: send-key hold-time, default
QEMU's), read the result from the VGA text buffer (pmemsave 0xb8000). Usage: grub_keys.py ISO PACE_MS KEYS [HOLD_MS].
Run it under `flock /tmp/kiln-qemu.lock` on a shared machine. Prints one JSON line."""
import json, os, socket, subprocess, sys, time, tempfile

iso, pace_ms, nkeys = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
hold = int(sys.argv[4]) if len(sys.argv) > 4 else None
d = tempfile.mkdtemp(prefix="kb-")
qmp_path = os.path.join(d, "qmp.sock")
q = subprocess.Popen(["qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", "1024", "-smp", "2",
                      "-cdrom", iso, "-boot", "menu=on,order=d", "-display", "none", "-vga", "std",
                      "-serial", "file:" + os.path.join(d, "serial.log"),
                      "-qmp", f"unix:{qmp_path},server=on,wait=off"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(100):
    if os.path.exists(qmp_path): break
    time.sleep(0.05)
s = socket.socket(socket.AF_UNIX); s.connect(qmp_path); f = s.makefile("rw")
def rd():
    while True:
        m = json.loads(f.readline())
        if "event" not in m: return m
def cmd(c, **a):
    f.write(json.dumps({"execute": c, "arguments": a} if a else {"execute": c}) + "\n"); f.flush()
    r = rd()
    if "error" in r: raise SystemExit(f"{c}: {r['error']}")
    return r.get("return")
rd(); cmd("qmp_capabilities")
dump = os.path.join(d, "vga.bin")
def screen():
    cmd("pmemsave", val=0xb8000, size=4000, filename=dump)
    b = open(dump, "rb").read()
    t = bytes(b[i] for i in range(0, len(b), 2)).decode("cp437")
    return [t[i:i+80].rstrip() for i in range(0, 2000, 80)]
def wait_screen(needle, timeout):
    end = time.time() + timeout
    while time.time() < end:
        sc = screen()
        if any(needle in l for l in sc): return sc
        time.sleep(0.05)
    raise SystemExit(f"timeout waiting for {needle!r}:\n" + "\n".join(screen()))
def key(k):
    a = {"keys": [{"type": "qcode", "data": x} for x in k.split("-")]}
    if hold is not None: a["hold-time"] = hold
    cmd("send-key", **a)
t0 = time.time()
wait_screen("will be executed automatically", 90)
t_menu = time.time() - t0
for k in ["e"]:
    key(k)
wait_screen("casper/vmlinuz", 10)
for k in ["down", "down", "down", "end"]:
    key(k); time.sleep(0.3)
# the keys to type: a repeating a..z0..9 pattern, N keys
alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
text = "".join(alphabet[i % len(alphabet)] for i in range(nkeys))
key("spc")
time.sleep(0.5)
t1 = time.time()
for ch in text:
    key(ch)
    if pace_ms: time.sleep(pace_ms / 1000)
t_sent = time.time() - t1
# wait until the editor text stops changing
last, stable_since, got = None, time.time(), ""
while time.time() - stable_since < 2.0:
    sc = "".join(screen())
    if sc != last: last, stable_since = sc, time.time(); t_last_change = time.time() - t1
    time.sleep(0.02)
flat = "".join(l.ljust(80) for l in screen())
i = flat.find("--- ")
typed = flat[i+4:] if i >= 0 else flat
j = typed.find("initrd")
typed = typed[:j] if j >= 0 else typed
typed = "".join(c for c in typed if c in alphabet)[: nkeys + 10]
lost = nkeys - len(typed)
ok = typed == text
print(json.dumps({"iso": os.path.basename(os.path.dirname(iso)) + "/" + os.path.basename(iso), "pace_ms": pace_ms,
                  "hold_ms": hold, "keys": nkeys, "menu_after_s": round(t_menu, 1),
                  "send_s": round(t_sent, 2), "screen_done_s": round(t_last_change, 2),
                  "ms_per_key": round(1000 * t_last_change / nkeys, 1), "received": len(typed), "lost": lost,
                  "intact": ok}))
if not ok: print("typed:", typed, file=sys.stderr)
cmd("quit"); q.wait(10)
