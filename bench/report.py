#!/usr/bin/env python3
"""Helpers for bench/run.sh (stdlib only).

  report.py fio FIO_JSON RW          -> prints "iops mib_s clat_mean_us clat_p99_us"
  report.py report META_TSV RESULTS_TSV OUT_TXT OUT_JSON
                                     -> prints the result table, writes txt + json
"""
import json
import statistics
import sys

SERVERS = ["nbd-node", "qemu-nbd", "nbdkit"]
LAT_HDR = {"nbd-node": "node µs", "qemu-nbd": "qemu µs", "nbdkit": "nbdkit µs"}

# (id, label, unit, has_latency)
WORKLOADS = [
    ("rr4k_qd1", "4k randread QD1", "IOPS", True),
    ("rr4k_qd32", "4k randread QD32", "IOPS", True),
    ("rw4k_qd32", "4k randwrite QD32", "IOPS", True),
    ("sr1m_qd8", "1M seq read QD8", "MiB/s", True),
    ("sw1m_qd8", "1M seq write QD8", "MiB/s", True),
    ("copy_read", "nbdcopy -C4 srv->null", "MiB/s", False),
    ("copy_write", "nbdcopy -C4 file->srv", "MiB/s", False),
]
# TLS-PSK section: (id, label, unit, has_latency, plain counterpart id)
TLS_WORKLOADS = [
    ("tls_rr4k_qd32", "TLS 4k randread QD32", "IOPS", True, "rr4k_qd32"),
    ("tls_sr1m_qd8", "TLS 1M seq read QD8", "MiB/s", True, "sr1m_qd8"),
    ("tls_copy_read1", "TLS nbdcopy -C1 srv->null", "MiB/s", False, None),
    ("tls_copy_read", "TLS nbdcopy -C4 srv->null", "MiB/s", False, "copy_read"),
    ("tls_copy_write", "TLS nbdcopy -C4 file->srv", "MiB/s", False, "copy_write"),
]
RSS_ROWS = [
    ("rss_idle", "RSS idle"),
    ("rss_load", "RSS max during 4k QD32"),
    ("rss_hwm", "RSS peak (VmHWM, whole leg)"),
]


def fio(path, rw):
    with open(path) as f:
        text = f.read()
    # fio may print warnings before the JSON document
    data = json.loads(text[text.index("{"):])
    job = data["jobs"][0]
    if job.get("error", 0):
        raise SystemExit(f"fio job error {job['error']}")
    side = job["write" if "write" in rw else "read"]
    clat = side.get("clat_ns", {})
    p99 = clat.get("percentile", {}).get("99.000000", 0) / 1000.0
    print(f"{side['iops']:.1f} {side['bw_bytes'] / 1048576.0:.1f} "
          f"{clat.get('mean', 0) / 1000.0:.1f} {p99:.1f}")


def load_results(path):
    res = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 4:
                continue
            srv, wl, metric, val = parts
            try:
                v = float(val)
            except ValueError:
                continue
            res.setdefault(srv, {}).setdefault(wl, {}).setdefault(metric, []).append(v)
    return res


def get(res, srv, wl, metric):
    vals = res.get(srv, {}).get(wl, {}).get(metric)
    if not vals:
        return None
    return statistics.median(vals)


def fmt(v, nd=0):
    if v is None:
        return "-"
    return f"{v:,.{nd}f}"


def ratio_num(a, b):
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def ratio(a, b):
    r = ratio_num(a, b)
    if r is None:
        return "-"
    return f"{r:.3f}" if r < 0.1 else f"{r:.2f}"


def report(meta_path, res_path, out_txt, out_json):
    meta = {}
    with open(meta_path) as f:
        for line in f:
            if "\t" in line:
                k, v = line.rstrip("\n").split("\t", 1)
                meta[k] = v
    res = load_results(res_path)
    lines = []
    lines.append(f"kube-nbd benchmark  {meta.get('date', '')}")
    lines.append(f"host:    {meta.get('cpu_model', '?')}, {meta.get('cores', '?')} cores, "
                 f"kernel {meta.get('kernel', '?')}, load avg before run {meta.get('loadavg', '?')}")
    lines.append(f"image:   {meta.get('size_human', '?')} random data on tmpfs; fio runtime "
                 f"{meta.get('runtime', '?')} s + ramp {meta.get('ramp', '?')} s, numjobs 1, "
                 f"warm-up {meta.get('warmup', '?')} s; "
                 f"nbdcopy median of {meta.get('copy_reps', '?')}")
    lines.append(f"client:  {meta.get('fio_version', '?')}, {meta.get('nbdcopy_version', '?')}")
    for s in SERVERS:
        st = meta.get(f"status.{s}", "not run")
        ver = meta.get(f"version.{s}", "")
        mc = meta.get(f"multiconn.{s}", "")
        extra = f"  [multi-conn: {mc}]" if mc else ""
        lines.append(f"{s + ':':9} {ver or '-'}  ({st}){extra}")
    lines.append("")
    jrows = []
    if meta.get("tls_mode", "1") != "only":
        plain_table(meta, res, lines, jrows)
    if meta.get("tls_mode", "1") != "0":
        tls_table(meta, res, lines, jrows)
    lines.append("ratios: nbd-node / peer of the main metric (IOPS, MiB/s); >1 = nbd-node faster."
                 " For RSS rows >1 = nbd-node uses more memory.")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(out_txt, "w") as f:
        f.write(text)
    with open(out_json, "w") as f:
        json.dump({"meta": meta, "rows": jrows}, f, indent=2, ensure_ascii=False)
        f.write("\n")


def table_header():
    return (f"{'workload':<28}{'unit':>6}"
            + "".join(f"{s:>11}" for s in SERVERS)
            + "  |" + "".join(f"{LAT_HDR[s]:>12}" for s in SERVERS)
            + "  |" + f"{'node/qemu':>10}{'node/kit':>10}")


def tls_table(meta, res, lines, jrows):
    lines.append("=== TLS-PSK (TLS required, PSK identity 'alice'; client libnbd/GnuTLS; fio via "
                 f"LD_PRELOAD shim; nbdcopy median of {meta.get('tls_copy_reps', '?')}; "
                 f"load avg before section {meta.get('tls_loadavg', '?')})")
    for s in SERVERS:
        st = meta.get(f"tls_status.{s}", "not run")
        ciph = meta.get(f"tls_cipher.{s}", "-")
        req = meta.get(f"tls_required.{s}", "?")
        lines.append(f"{s + ':':9} {ciph}  ({st}; plain NBD refused: {req})")
        if meta.get(f"tls_serverlog.{s}"):
            lines.append(f"{'':9} server log: {meta[f'tls_serverlog.{s}']}")
    if meta.get("tls_fio") == "no":
        lines.append("(fio TLS rows skipped: the LD_PRELOAD shim could not be built, no C compiler)")
    lines.append("")
    hdr = table_header()
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for wid, label, unit, has_lat, plain in TLS_WORKLOADS:
        vals = {s: get(res, s, wid, "value") for s in SERVERS}
        lats = {s: get(res, s, wid, "lat_us") for s in SERVERS}
        nd = 0 if unit == "IOPS" else 1
        lines.append(f"{label:<28}{unit:>6}"
                     + "".join(f"{fmt(vals[s], nd):>11}" for s in SERVERS)
                     + "  |" + "".join(f"{(fmt(lats[s], 1) if has_lat else ''):>12}" for s in SERVERS)
                     + "  |" + f"{ratio(vals['nbd-node'], vals['qemu-nbd']):>10}"
                     + f"{ratio(vals['nbd-node'], vals['nbdkit']):>10}")
        jrows.append({
            "id": wid, "label": label, "unit": unit, "tls": True,
            "value": vals, "clat_mean_us": lats if has_lat else None,
            "clat_p99_us": {s: get(res, s, wid, "p99_us") for s in SERVERS} if has_lat else None,
            "server_cpu_cores": {s: get(res, s, wid, "cpu") for s in SERVERS},
            "samples": {s: res.get(s, {}).get(wid, {}).get("value", []) for s in SERVERS},
            "ratio_node_qemu": ratio_num(vals["nbd-node"], vals["qemu-nbd"]),
            "ratio_node_nbdkit": ratio_num(vals["nbd-node"], vals["nbdkit"]),
            "ratio_tls_plain": {s: ratio_num(vals[s], get(res, s, plain, "value")) for s in SERVERS}
            if plain else None,
        })
    lines.append("-" * len(hdr))
    vals = {s: get(res, s, "tls_rss", "rss_hwm") for s in SERVERS}
    lines.append(f"{'RSS peak (VmHWM, TLS leg)':<28}{'MiB':>6}"
                 + "".join(f"{fmt(vals[s], 1):>11}" for s in SERVERS)
                 + "  |" + " " * 36 + "  |"
                 + f"{ratio(vals['nbd-node'], vals['qemu-nbd']):>10}"
                 + f"{ratio(vals['nbd-node'], vals['nbdkit']):>10}")
    jrows.append({"id": "tls_rss_hwm", "label": "RSS peak (VmHWM, TLS leg)", "unit": "MiB",
                  "tls": True, "value": vals,
                  "ratio_node_qemu": ratio_num(vals["nbd-node"], vals["qemu-nbd"]),
                  "ratio_node_nbdkit": ratio_num(vals["nbd-node"], vals["nbdkit"])})
    lines.append("")
    lines.append("server CPU during each TLS run (cores busy, of "
                 f"{meta.get('cores', '?')}):")
    for wid, label, unit, _, _ in TLS_WORKLOADS:
        cpus = {s: get(res, s, wid, "cpu") for s in SERVERS}
        lines.append(f"  {label:<26}" + "".join(f"{fmt(cpus[s], 2):>11}" for s in SERVERS))
    if meta.get("tls_mode", "1") != "only":
        lines.append("")
        lines.append("TLS / plain, same server and workload (1.00 = no TLS cost; plain = the table above):")
        for wid, label, unit, _, plain in TLS_WORKLOADS:
            if not plain:
                continue
            lines.append(f"  {label:<26}" + "".join(
                f"{ratio(get(res, s, wid, 'value'), get(res, s, plain, 'value')):>11}" for s in SERVERS))
    lines.append("")


def plain_table(meta, res, lines, jrows):
    hdr = (f"{'workload':<28}{'unit':>6}"
           + "".join(f"{s:>11}" for s in SERVERS)
           + "  |" + "".join(f"{LAT_HDR[s]:>12}" for s in SERVERS)
           + "  |" + f"{'node/qemu':>10}{'node/kit':>10}")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for wid, label, unit, has_lat in WORKLOADS:
        vals = {s: get(res, s, wid, "value") for s in SERVERS}
        lats = {s: get(res, s, wid, "lat_us") for s in SERVERS}
        nd = 0 if unit == "IOPS" else 1
        row = (f"{label:<28}{unit:>6}"
               + "".join(f"{fmt(vals[s], nd):>11}" for s in SERVERS)
               + "  |" + "".join(f"{(fmt(lats[s], 1) if has_lat else ''):>12}" for s in SERVERS)
               + "  |" + f"{ratio(vals['nbd-node'], vals['qemu-nbd']):>10}"
               + f"{ratio(vals['nbd-node'], vals['nbdkit']):>10}")
        lines.append(row)
        jrows.append({
            "id": wid, "label": label, "unit": unit,
            "value": vals, "clat_mean_us": lats if has_lat else None,
            "clat_p99_us": {s: get(res, s, wid, "p99_us") for s in SERVERS} if has_lat else None,
            "server_cpu_cores": {s: get(res, s, wid, "cpu") for s in SERVERS},
            "samples": {s: res.get(s, {}).get(wid, {}).get("value", []) for s in SERVERS},
            "ratio_node_qemu": ratio_num(vals["nbd-node"], vals["qemu-nbd"]),
            "ratio_node_nbdkit": ratio_num(vals["nbd-node"], vals["nbdkit"]),
        })
    lines.append("-" * len(hdr))
    for rid, label in RSS_ROWS:
        vals = {s: get(res, s, "rss", rid) for s in SERVERS}
        lines.append(f"{label:<28}{'MiB':>6}"
                     + "".join(f"{fmt(vals[s], 1):>11}" for s in SERVERS)
                     + "  |" + " " * 36 + "  |"
                     + f"{ratio(vals['nbd-node'], vals['qemu-nbd']):>10}"
                     + f"{ratio(vals['nbd-node'], vals['nbdkit']):>10}")
        jrows.append({"id": rid, "label": label, "unit": "MiB", "value": vals,
                      "ratio_node_qemu": ratio_num(vals["nbd-node"], vals["qemu-nbd"]),
                      "ratio_node_nbdkit": ratio_num(vals["nbd-node"], vals["nbdkit"])})
    lines.append("")
    lines.append("server CPU during each fio/nbdcopy run (cores busy, of "
                 f"{meta.get('cores', '?')}):")
    for wid, label, unit, _ in WORKLOADS:
        cpus = {s: get(res, s, wid, "cpu") for s in SERVERS}
        lines.append(f"  {label:<26}" + "".join(f"{fmt(cpus[s], 2):>11}" for s in SERVERS))
    lines.append("")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "fio" and len(sys.argv) == 4:
        fio(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 2 and sys.argv[1] == "report" and len(sys.argv) == 6:
        report(*sys.argv[2:])
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)
