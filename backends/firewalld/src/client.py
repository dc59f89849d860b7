# cf-allowlist's firewalld client: one process per observe or apply, talking to firewalld over
# D-Bus through firewalld's own Python client library (the one firewall-cmd uses), so that a
# sync costs one or two interpreter starts instead of one firewall-cmd (~0.3 s) per step.
#
# Usage: client.py observe NAME...   (the ipsets to read; prints one JSON object)
#        client.py apply             (reads a JSON list of steps on stdin; prints `done N` per
#                                     step, in order)
# Exit codes: 0 done; 1 firewalld refused a step (its message on stderr); 3 firewalld is not
# running (or the system bus is not there); 4 firewalld's client library is missing.
import json
import sys

try:
    import dbus
    from firewall.client import FirewallClient, FirewallClientIPSetSettings
    from firewall.errors import FirewallError
except ImportError as error:
    sys.stderr.write("firewalld's python client library is missing: %s\n" % error)
    sys.exit(4)


def connect():
    try:
        fw = FirewallClient()
    except (dbus.exceptions.DBusException, FirewallError) as error:
        # The library wraps the bus's own error (DBUS_ERROR: Failed to connect to socket …).
        message = error.get_dbus_message() if isinstance(error, dbus.exceptions.DBusException) else str(error)
        sys.stderr.write(
            "firewalld is not running: the D-Bus system bus it answers on is not there (%s)\n" % message
        )
        sys.exit(3)
    if not fw.connected:
        sys.stderr.write("firewalld is not running (nothing answers on the D-Bus system bus)\n")
        sys.exit(3)
    return fw


def ipset_info(settings):
    return {
        "type": settings.getType(),
        "options": dict(settings.getOptions()),
        "description": settings.getDescription(),
        "entries": [str(entry) for entry in settings.getEntries()],
    }


def observe(fw, names):
    config = fw.config()
    runtime_sets = set(str(name) for name in fw.getIPSets())
    permanent_sets = set(str(name) for name in config.getIPSetNames())
    default_zone = str(fw.getDefaultZone())
    result = {
        "default_zone": default_zone,
        "runtime": {"ipsets": {}, "rich_rules": {}},
        "permanent": {"ipsets": {}, "rich_rules": {}},
    }
    for name in names:
        if name in runtime_sets:
            result["runtime"]["ipsets"][name] = ipset_info(fw.getIPSetSettings(name))
        if name in permanent_sets:
            result["permanent"]["ipsets"][name] = ipset_info(config.getIPSetByName(name).getSettings())
    # Every zone's rich rules: ours may have been left in a zone that is no longer configured.
    for zone in [str(zone) for zone in fw.getZones()]:
        result["runtime"]["rich_rules"][zone] = [str(rule) for rule in fw.getRichRules(zone)]
    # Which zones interfaces and sources are bound to: traffic they bring goes to that zone,
    # not to the default one.
    result["active_zones"] = {
        str(zone): sorted(
            [str(interface) for interface in bindings.get("interfaces", [])]
            + [str(source) for source in bindings.get("sources", [])]
        )
        for zone, bindings in fw.getActiveZones().items()
    }
    # What each zone opens to every source (its ports, and its services' ports), at runtime:
    # restrict's drop comes after them and cannot close them.
    service_ports = {}
    result["runtime"]["open_ports"] = {}
    for zone in [str(zone) for zone in fw.getZones()]:
        opened = [["port", "%s/%s" % (str(port), str(protocol))] for port, protocol in fw.getPorts(zone)]
        for service in [str(service) for service in fw.getServices(zone)]:
            if service not in service_ports:
                try:
                    settings = fw.getServiceSettings(service)
                    service_ports[service] = [
                        "%s/%s" % (str(port), str(protocol)) for port, protocol in settings.getPorts()
                    ]
                except dbus.exceptions.DBusException:
                    service_ports[service] = []
            opened += [["service " + service, port] for port in service_ports[service]]
        result["runtime"]["open_ports"][zone] = opened
    for zone in [str(zone) for zone in config.getZoneNames()]:
        rules = config.getZoneByName(zone).getRichRules()
        result["permanent"]["rich_rules"][zone] = [str(rule) for rule in rules]
    return result


def set_runtime_entries(fw, name, add, remove):
    current = [str(entry) for entry in fw.getEntries(name)]
    if not current and add:
        # An empty set loses nothing to firewalld's flush-and-refill: one transaction.
        fw.setEntries(name, add)
        return
    # One entry at a time: each is one nft transaction of firewalld's, and a kept entry is never
    # flushed (setEntries, which firewall-cmd's --add-entries-from-file uses, empties the set
    # first). Adds before removes.
    for entry in add:
        fw.addEntry(name, entry)
    for entry in remove:
        fw.removeEntry(name, entry)


def apply_step(fw, step):
    op = step["op"]
    config = fw.config()
    if op == "permanent-new-ipset":
        settings = FirewallClientIPSetSettings()
        settings.setType("hash:net")
        if step["family"] == "inet6":
            settings.setOptions({"family": "inet6"})
        settings.setShort(step["short"])
        settings.setDescription(step["description"])
        settings.setEntries(step["entries"])
        config.addIPSet(step["name"], settings)
    elif op == "permanent-ipset":
        ipset = config.getIPSetByName(step["name"])
        settings = ipset.getSettings()
        entries = [str(entry) for entry in settings.getEntries()]
        entries = [entry for entry in entries if entry not in set(step["remove"])]
        entries += [entry for entry in step["add"] if entry not in set(entries)]
        settings.setEntries(entries)
        settings.setDescription(step["description"])
        ipset.update(settings)
    elif op == "permanent-remove-ipset":
        config.getIPSetByName(step["name"]).remove()
    elif op == "permanent-add-rich-rule":
        config.getZoneByName(step["zone"]).addRichRule(step["rule"])
    elif op == "permanent-remove-rich-rule":
        config.getZoneByName(step["zone"]).removeRichRule(step["rule"])
    elif op == "entries":
        set_runtime_entries(fw, step["name"], step["add"], step["remove"])
    elif op == "add-rich-rule":
        fw.addRichRule(step["zone"], step["rule"])
    elif op == "remove-rich-rule":
        fw.removeRichRule(step["zone"], step["rule"])
    elif op == "reload":
        fw.reload()
    else:
        raise ValueError("unknown step %r" % op)


def main():
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    fw = connect()
    if command == "observe":
        names = sys.argv[2:]
        try:
            snapshot = observe(fw, names)
        except dbus.exceptions.DBusException as error:
            sys.stderr.write("observe: %s\n" % error.get_dbus_message())
            sys.exit(1)
        json.dump(snapshot, sys.stdout)
        return
    if command != "apply":
        sys.stderr.write("usage: client.py observe NAME... | apply\n")
        sys.exit(2)
    steps = json.load(sys.stdin)
    for index, step in enumerate(steps):
        try:
            apply_step(fw, step)
        except dbus.exceptions.DBusException as error:
            sys.stderr.write("%s: %s\n" % (step["op"], error.get_dbus_message()))
            sys.exit(1)
        except FirewallError as error:
            # The client library checks some things itself (overlapping entries) before
            # asking firewalld.
            sys.stderr.write("%s: %s\n" % (step["op"], error))
            sys.exit(1)
        print("done %d" % index, flush=True)


main()
