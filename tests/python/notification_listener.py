#!/usr/bin/python3
"""A freedesktop notification server for tests: owns org.freedesktop.Notifications on the
session bus it is given and prints each Notify call as one JSON line (app, summary, body),
then flushes. Uses the system Python's dbus and gi (Debian: python3-dbus, python3-gi)."""

import json
import sys

import dbus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"


class Notifications(dbus.service.Object):
    def __init__(self, bus):
        super().__init__(bus, PATH)
        self.next_id = 1

    @dbus.service.method(NAME, in_signature="susssasa{sv}i", out_signature="u")
    def Notify(self, app, replaces, icon, summary, body, actions, hints, timeout):
        print(json.dumps({"app": str(app), "summary": str(summary), "body": str(body)}), flush=True)
        self.next_id += 1
        return self.next_id - 1

    @dbus.service.method(NAME, in_signature="", out_signature="as")
    def GetCapabilities(self):
        return ["body"]

    @dbus.service.method(NAME, in_signature="", out_signature="ssss")
    def GetServerInformation(self):
        return ("loopsy-test", "loopsy", "1", "1.2")

    @dbus.service.method(NAME, in_signature="u", out_signature="")
    def CloseNotification(self, id):
        pass


def main():
    DBusGMainLoop(set_as_default=True)
    bus = dbus.SessionBus()
    name = dbus.service.BusName(NAME, bus, do_not_queue=True)
    server = Notifications(bus)
    print(json.dumps({"ready": True}), flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    sys.exit(main())
