"""A Flask app behind a reverse proxy that asks Cloakroom first (forward-auth).

The proxy lets a request through only with a live session, and sets X-Cloakroom-User-Id,
X-Cloakroom-Username and X-Cloakroom-Roles from Cloakroom's answer, overwriting whatever the client
sent. The app trusts those headers, so it must be reachable only through the proxy: listen on
127.0.0.1 or a private network, never where a client could send the headers itself.
Run by crates/server/tests/snippets.rs, behind the nginx recipe (which guards /app/).
"""

import functools
import os

from flask import Flask, abort, g, jsonify, request
from werkzeug.serving import make_server

app = Flask(__name__)


def login_required(view):
    """Puts the user the proxy vouched for ({id, username, roles}) on g.user."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        user_id = request.headers.get("X-Cloakroom-User-Id", "")
        if not user_id:
            abort(401)  # the proxy let a request through without a user: its configuration is wrong
        g.user = {
            "id": user_id,
            "username": request.headers.get("X-Cloakroom-Username", ""),
            "roles": [r for r in request.headers.get("X-Cloakroom-Roles", "").split(",") if r],
        }
        return view(*args, **kwargs)

    return wrapper


@app.get("/app/me")
@login_required
def me():
    return jsonify(g.user)


@app.get("/app/transfer")
@login_required
def transfer_form():
    return (
        '<!doctype html><title>Transfer</title>'
        '<form method="post"><input name="amount" value="100"><button>Send</button></form>'
    )


@app.post("/app/transfer")
@login_required
def transfer():
    # A plain form post, with no CSRF token of the app's own: Cloakroom's check refused it unless
    # the browser said it came from this origin (Sec-Fetch-Site: same-origin, or an allowed Origin).
    return jsonify(user=g.user["username"], amount=request.form.get("amount", type=int))


if __name__ == "__main__":
    # Werkzeug's server, for the example; in production, a WSGI server such as
    # gunicorn app:app -b 127.0.0.1:8080
    server = make_server("127.0.0.1", int(os.environ.get("PORT", "8080")), app, threaded=True)
    print(f"listening on {server.server_port}", flush=True)
    server.serve_forever()
