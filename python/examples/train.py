import sys
import numpy as np
import lclstream

url, seed_file, institution = sys.argv[1:4]
client = lclstream.Client(url, seed_file, institution)
grant = client.request(["lcls.mfx.mfxp1234.>"], label="training")
model, seen = 0.0, 0
for batch in client.stream(grant).batches(idle_timeout=10):
    frames = np.stack([e.arrays["jungfrau"] for e in batch.events]).astype(np.float32)
    model += 0.1 * (frames.mean(axis=0) - model)  # the training step (yours here)
    seen += len(frames)  # acknowledged when the loop asks for the next batch
print(f"trained on {seen} events; model mean {np.mean(model):.2f}")
