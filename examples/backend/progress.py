#!/usr/bin/env python3
"""A backend job that reports its progress to one browser tab through
Switchboard's push API, with the standard library only. Stops when the user
cancels (409) or closes the tab (404).

    python3 examples/backend/progress.py CLIENT_ID [JOB]

Environment: SWITCHBOARD_URL (default http://127.0.0.1:8080),
SWITCHBOARD_PUSH_TOKEN (if the server requires one), STEPS (default 10),
STEP_DELAY in seconds (default 0.5).
Exit status: 0 done, 2 the browser is gone, 3 cancelled by the user, 1 error.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request


def push(url, token, payload):
    """POSTs one push; returns the HTTP status and the JSON answer."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: progress.py CLIENT_ID [JOB]")
    client = sys.argv[1]
    job = sys.argv[2] if len(sys.argv) > 2 else "job-%d" % os.getpid()
    url = os.environ.get("SWITCHBOARD_URL", "http://127.0.0.1:8080") + "/_/push"
    token = os.environ.get("SWITCHBOARD_PUSH_TOKEN", "")
    steps = int(os.environ.get("STEPS", "10"))
    delay = float(os.environ.get("STEP_DELAY", "0.5"))
    for i in range(steps + 1):
        progress = i * 100 // steps
        message = {"job": job, "progress": progress, "text": "step %d of %d" % (i, steps)}
        status, answer = push(url, token, {"to": {"client": client}, "message": message})
        if status == 404:
            print("the browser is gone; stopping job %s at %d%%" % (job, progress))
            return 2
        if status == 409:
            print("the user cancelled job %s at %d%%" % (job, progress))
            return 3
        if status != 200:
            print("push failed with HTTP %d: %s" % (status, answer.get("error")), file=sys.stderr)
            return 1
        if i < steps:
            time.sleep(delay)
    print("job %s done" % job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
