# Written for this project's tests (Apache-2.0): parse each message file given as an argument
# with Python's `email` package (policy.default) and print, as JSON, per message: the defects
# of every part, and the decoded text/plain and text/html bodies.
import email
import email.policy
import json
import sys

out = []
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        msg = email.message_from_bytes(f.read(), policy=email.policy.default)
    defects = [f"{type(d).__name__}" for d in msg.defects]
    texts, htmls = [], []
    for part in msg.walk():
        defects += [f"{part.get_content_type()}: {type(d).__name__}" for d in part.defects]
        if part.is_multipart():
            continue
        ct = part.get_content_type()
        if ct == "text/plain":
            texts.append(part.get_content())
        elif ct == "text/html":
            htmls.append(part.get_content())
    out.append({"defects": defects, "text": "\n".join(texts), "html": "\n".join(htmls),
                "headers": [[k, str(v)] for k, v in msg.items()]})
print(json.dumps(out))
