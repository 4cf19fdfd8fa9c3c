#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for klaxon's email tests.

Binds 127.0.0.1 (port 0 by default), prints the port on its first stdout line, then, for
every message it accepts, writes a JSON file into OUT_DIR (envelope sender, recipients,
whether the session was encrypted, the authenticated login, and the raw content) and
prints `received <path>`. It exits when its standard input closes, so it never outlives
the test that started it.

    smtp_server.py OUT_DIR [--port N] [--tls-cert PEM --tls-key PEM [--implicit-tls]]
                   [--auth USER:PASSWORD] [--reject-code CODE]

--tls-cert/--tls-key: offer STARTTLS and require it before MAIL (or, with
--implicit-tls, speak TLS from the first byte). --auth: require AUTH (PLAIN or LOGIN),
over TLS when TLS is on. --reject-code: answer every DATA with that code (e.g. 550, 451).
"""

import argparse
import asyncio
import itertools
import json
import logging
import os
import ssl
import sys
import threading
import warnings

try:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
except ImportError as err:  # pragma: no cover - reported to the test
    sys.stderr.write(f"smtp_server.py needs aiosmtpd (pip install aiosmtpd): {err}\n")
    sys.exit(2)


class Recorder:
    """Writes each accepted message to a file and announces it on stdout."""

    def __init__(self, out_dir, reject_code):
        self.out_dir = out_dir
        self.reject_code = reject_code
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        if self.reject_code is not None:
            return f"{self.reject_code} {rejection_status(self.reject_code)} rejected by test server"
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "auth_login": login_of(session),
            "content": envelope.original_content.decode("utf-8", errors="replace"),
        }
        path = os.path.join(self.out_dir, f"message-{next(self.counter):04}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(record, f)
        print(f"received {path}", flush=True)
        return "250 2.0.0 OK"


def rejection_status(code):
    return "5.7.1" if code >= 500 else "4.3.0"


def login_of(session):
    if not session.authenticated:
        return None
    data = session.auth_data
    if isinstance(data, LoginPassword):
        return data.login.decode("utf-8", errors="replace")
    return None


def authenticator_for(user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return authenticate


def exit_when_stdin_closes():
    def watch():
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--implicit-tls", action="store_true")
    parser.add_argument("--auth", help="USER:PASSWORD")
    parser.add_argument("--reject-code", type=int)
    args = parser.parse_args()
    # aiosmtpd warns about test-only choices (AUTH over implicit TLS, deprecated login_data)
    # and logs a traceback for each failed handshake, which some tests cause on purpose.
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)

    context = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            parser.error("--tls-cert and --tls-key go together")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    if args.implicit_tls and context is None:
        parser.error("--implicit-tls needs --tls-cert and --tls-key")

    options = {}
    if context is not None and not args.implicit_tls:
        options.update(tls_context=context, require_starttls=True)
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep:
            parser.error("--auth takes USER:PASSWORD")
        options.update(
            authenticator=authenticator_for(user, password),
            auth_required=True,
            # Over implicit TLS aiosmtpd does not know the session is encrypted.
            auth_require_tls=context is not None and not args.implicit_tls,
        )

    handler = Recorder(args.out_dir, args.reject_code)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="localhost", loop=loop, **options),
        host="127.0.0.1",
        port=args.port,
        ssl=context if args.implicit_tls else None,
    )
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    exit_when_stdin_closes()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
