"""Plivo's Python SDK against sipauth's API.

Usage: plivo_sdk.py BASE_URL AUTH_ID AUTH_TOKEN

The SDK's API address is a module constant; it is pointed at BASE_URL
(e.g. http://127.0.0.1:8080) and everything else is the SDK as shipped.
Each step asserts what the SDK returns; the first failure exits non-zero
with its traceback.
"""

import sys

import plivo
import plivo.rest.client as client_module

base, auth_id, auth_token = sys.argv[1], sys.argv[2], sys.argv[3]
for name in (
    "PLIVO_API_BASE_URI",
    "API_VOICE_BASE_URI",
    "API_VOICE_BASE_URI_FALLBACK_1",
    "API_VOICE_BASE_URI_FALLBACK_2",
):
    setattr(client_module, name, base + "/v1/Account")

client = plivo.RestClient(auth_id, auth_token)

# Applications: create, get, list with the app_name filter, update, delete.
made = client.applications.create(
    app_name="sdk-app", answer_url="https://example.test/answer", answer_method="GET"
)
app_id = made.app_id
assert made.message == "created", made
app = client.applications.get(app_id)
assert app.app_name == "sdk-app" and app.answer_method == "GET", app
client.applications.create(app_name="other-app", answer_url="https://example.test/other")
named = client.applications.list(app_name="sdk-app")
assert [a.app_id for a in named] == [app_id], named
assert len(client.applications.list()) == 2
client.applications.update(app_id, answer_url="https://example.test/answer2")
assert client.applications.get(app_id).answer_url == "https://example.test/answer2"

# Endpoints: create attached to the application, get (registration fields
# included), list, update, delete.
ep = client.endpoints.create(
    username="sdkdesk", password="Desk12345", alias="SDK desk", app_id=app_id
)
endpoint_id = ep.endpoint_id
got = client.endpoints.get(endpoint_id)
assert got.username.startswith("sdkdesk"), got
assert got.alias == "SDK desk", got
assert got.sip_registered == "false", got
assert any(e.endpoint_id == endpoint_id for e in client.endpoints.list())
client.endpoints.update(endpoint_id, alias="SDK hall")
assert client.endpoints.get(endpoint_id).alias == "SDK hall"

# Calls: Make Call, then the call as recorded.
call = client.calls.create(
    from_="15550100", to_="sip:bob@192.0.2.9", answer_url="https://example.test/answer"
)
assert call.message == "call fired", call
request_uuid = call.request_uuid
record = client.calls.get(request_uuid)
assert record.call_uuid == request_uuid and record.to_number == "sip:bob@192.0.2.9", record

# Errors come back as the SDK's own exceptions.
try:
    client.applications.get("12345")
    raise SystemExit("a missing application was found")
except plivo.exceptions.ResourceNotFoundError:
    pass

client.endpoints.delete(endpoint_id)
client.applications.delete(app_id)
assert [a.app_id for a in client.applications.list(app_name="sdk-app")] == []
print("plivo SDK: applications, endpoints and calls ok")
