"""A sluice routing policy: forwards every request to the default pool and tags the response.

Build:  sluice policy build .          (needs: pip install componentize-py==0.25.1)
Try:    sluice policy test build/policy.wasm --request 'GET https://example.com/'
"""

from sluice import forward_default


def decide(req):
    return forward_default().set_response_header("x-policy", "python")
