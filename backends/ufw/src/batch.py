# Applies several ufw commands in one process, with ufw's own code (see batch.rs).
#
# stdin: one ufw command per line, its arguments separated by tabs, exactly as they would follow
# `ufw` on a command line (only rule commands: [prepend|insert N] allow|deny ..., delete ...).
# stdout: "applied<TAB>N<TAB>ufw's answer" for each command N (from 0) once it is in the files.
# Exit 0: all applied and, if ufw is enabled, loaded. Exit 4: this ufw lacks what the batch
# needs (nothing was done). Any other failure: the traceback on stderr; the commands reported as
# applied are in the files, and the live load below has still been attempted.
import gettext
import inspect
import sys

import ufw.common
import ufw.frontend
import ufw.util

gettext.install(ufw.common.programName)
# Run as `python3 -c SCRIPT UFW_PROGRAM`: ufw checks the permissions of sys.argv[0] and its
# folders, so it must be the ufw program, as when ufw runs.
sys.argv = sys.argv[1:]


def unsupported(what):
    sys.stderr.write("unsupported ufw: %s\n" % what)
    sys.exit(4)


# ufw's own lock, the one every `ufw` command takes: concurrent ufw calls wait for this batch.
lock = ufw.util.create_lock()
backend = None
enabled = False
applied = []
try:
    ui = ufw.frontend.UFWFrontend(False)
    backend = ui.backend
    if "allow_reload" not in inspect.signature(backend.set_rule).parameters:
        unsupported("set_rule has no allow_reload")
    for attribute in ("iptables_restore", "ip6tables_restore", "files", "get_rules_count"):
        if not hasattr(backend, attribute):
            unsupported("no backend.%s" % attribute)
    enabled = backend.is_enabled()
    # While the batch runs, set_rule must only rewrite the rules files, as it does for an
    # inactive ufw: no per-rule reload (which flushes the live chains), no per-rule iptables
    # call. The live chains are loaded once per family at the end.
    backend.is_enabled = lambda: False
    # set_rule rewrites a whole rules file after every rule, which makes n rules cost n^2. The
    # file is a function of the rule list alone, so ufw's own writer runs once per family that
    # changed, at the end, with the final list: the same bytes as after the last per-rule write.
    write_rules = backend._write_rules
    dirty = set()
    backend._write_rules = lambda v6=False: dirty.add(v6)
    for number, line in enumerate(sys.stdin):
        argv = line.rstrip("\n").split("\t")
        # "after<TAB>SPEC...<TAB>--<TAB>RULE...": RULE goes right after the rule SPEC names,
        # found here, under ufw's lock, by what it is (ufw's own match, comments aside) and never
        # by a number read before the lock was taken.
        anchor = None
        if argv[0] == "after":
            split = argv.index("--")
            anchor = ufw.frontend.parse_command(["ufw"] + argv[1:split]).data["rule"]
            argv = argv[split + 1:]
        parsed = ufw.frontend.parse_command(["ufw"] + argv)
        rule = parsed.data["rule"]
        v6 = parsed.data["iptype"] == "v6"
        if parsed.data["iptype"] not in ("v4", "v6"):
            raise ufw.common.UFWError("not a single-family rule: %s" % line)
        # Positions as ufw's frontend computes them for a single-family rule.
        rule.set_v6(v6)
        if anchor is not None:
            anchor.set_v6(v6)
            rules = backend.rules6 if v6 else backend.rules
            found = [at for (at, r) in enumerate(rules)
                     if ufw.common.UFWRule.match(r, anchor) in (0, -2)]
            if not found:
                raise ufw.common.UFWError("the rule to follow is gone: %s" % line)
            at = found[0]
            rule.set_position(at + 2 if at + 1 < len(rules) else 0)
        elif rule.position == -1:
            rule.set_position(1 if backend.get_rules_count(v6) > 0 else 0)
        elif rule.position > 0 and v6:
            rule.set_position(rule.position - backend.get_rules_count(False))
        answer = backend.set_rule(rule, allow_reload=False)
        applied.append("applied\t%d\t%s" % (number, answer))
finally:
    if backend is not None:
        for v6 in sorted(dirty):
            write_rules(v6)
        # Only now are the rules in the files.
        for line in applied:
            print(line, flush=True)
    if backend is not None and enabled:
        # What ufw's own reload does, minus its flush beforehand: each rules file declares the
        # user chains, so `iptables-restore -n` replaces them in one transaction per family.
        for exe, path in ((backend.iptables_restore, backend.files["rules"]),
                          (backend.ip6tables_restore, backend.files["rules6"])):
            (rc, out) = ufw.util.cmd_pipe(["cat", path], [exe, "-n"])
            if rc != 0:
                sys.stderr.write("loading %s failed: %s\n" % (path, out))
                sys.exit(5)
    ufw.util.release_lock(lock)
