#!/usr/bin/env python3
"""A web app's session manager as a few calls to session-worker's session API.

Standard library only (urllib). Replaces an app's own session code:

    from session_client import SessionClient

    sessions = SessionClient(os.environ["SESSION_WORKER_URL"],
                             os.environ["SESSION_API_TOKEN"])

    # login: create the session, hand the cookie to the browser
    session = sessions.create(username, {"cart": []})
    response.headers["Set-Cookie"] = session["set_cookie"]

    # every request: load it from the cookie (None: unknown, expired or ended)
    session = sessions.load(request.cookies.get("session_id"))

    sessions.update(session_id, {"cart": ["sku_1"], "coupon": None})  # merge patch
    sessions.logout(session_id)
    sessions.logout_everywhere(username, except_session_id=session_id)

session["data"]["subscribed"] and ["subscription_status"] are kept up to date
by session-worker from Stripe's webhooks; the app reads them and never writes
them.

Run as a script, it exercises every call against a running worker
(SESSION_WORKER_URL, SESSION_API_TOKEN) and prints "ok".
"""

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request


class SessionApiError(Exception):
    """An answer other than the one expected; .status is the HTTP status."""

    def __init__(self, status, message):
        super().__init__(f"session API answered {status}: {message}")
        self.status = status


class SessionClient:
    def __init__(self, base_url, token, timeout=5.0):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def create(self, username, data=None, ttl_secs=None):
        """At login: a new session (dict with session_id, data, set_cookie...)."""
        body = {"username": username}
        if data is not None:
            body["data"] = data
        if ttl_secs is not None:
            body["ttl_secs"] = ttl_secs
        return self._call("POST", "/sessions", body)

    def load(self, session_id):
        """On each request: the session, or None when it is unknown, expired or ended."""
        if not session_id:
            return None
        try:
            return self._call("GET", self._session_path(session_id))
        except SessionApiError as error:
            if error.status == 404:
                return None
            raise

    def update(self, session_id, changes):
        """Merges `changes` into the session's data (a key set to None is removed)."""
        return self._call("PATCH", self._session_path(session_id), {"data": changes})

    def logout(self, session_id):
        """Ends the session; False when it had already ended."""
        try:
            self._call("DELETE", self._session_path(session_id))
            return True
        except SessionApiError as error:
            if error.status == 404:
                return False
            raise

    def sessions(self, username):
        """The user's active sessions, newest first."""
        return self._call("GET", self._user_path(username))["sessions"]

    def logout_everywhere(self, username, except_session_id=None):
        """Ends every session of the user (but one); returns how many ended."""
        path = self._user_path(username)
        if except_session_id:
            path += "?" + urllib.parse.urlencode({"except": except_session_id})
        return self._call("DELETE", path)["ended"]

    @staticmethod
    def _session_path(session_id):
        return "/sessions/" + urllib.parse.quote(session_id, safe="")

    @staticmethod
    def _user_path(username):
        return "/users/" + urllib.parse.quote(username, safe="") + "/sessions"

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Authorization", "Bearer " + self._token)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                text = response.read()
                return json.loads(text) if text else None
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read()).get("error", "")
            except ValueError:
                message = error.reason
            raise SessionApiError(error.code, message) from None


def _demo():
    """Every call once, checked: the test suite runs this against the real server."""
    client = SessionClient(os.environ["SESSION_WORKER_URL"], os.environ["SESSION_API_TOKEN"])
    user = os.environ.get("DEMO_USERNAME", "demo_user")

    first = client.create(user, {"cart": [], "theme": "dark"})
    assert len(first["session_id"]) == 43, first
    assert "HttpOnly" in first["set_cookie"] and "SameSite=Lax" in first["set_cookie"], first
    assert first["data"]["subscribed"] is False, first
    second = client.create(user, ttl_secs=3600)

    loaded = client.load(first["session_id"])
    assert loaded["data"]["theme"] == "dark", loaded
    updated = client.update(first["session_id"], {"cart": ["sku_1"], "theme": None})
    assert updated["data"]["cart"] == ["sku_1"] and "theme" not in updated["data"], updated
    try:
        client.update(first["session_id"], {"subscribed": True})
        raise AssertionError("a worker key was accepted")
    except SessionApiError as error:
        assert error.status == 422, error

    listed = [s["session_id"] for s in client.sessions(user)]
    assert listed == [second["session_id"], first["session_id"]], listed
    assert client.logout_everywhere(user, except_session_id=first["session_id"]) == 1
    assert client.load(second["session_id"]) is None
    assert client.logout(first["session_id"]) is True
    assert client.logout(first["session_id"]) is False
    assert client.load(first["session_id"]) is None
    assert client.sessions(user) == []
    print("ok")


if __name__ == "__main__":
    try:
        _demo()
    except (AssertionError, SessionApiError) as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
