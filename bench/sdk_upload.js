// sdk_upload.js - the benchmark's peer: uploads an image into a page blob with the npm
// @azure/storage-blob SDK, 4 MiB Put Pages, N in flight, all-zero chunks skipped (the same work
// as `blob_tool upload --skip-zero`), optionally with Content-MD5. Prints one result line.
// usage: node sdk_upload.js IMAGE CONTAINER BLOB IN_FLIGHT md5|plain   (env BENCH_URL, BENCH_KEY)
"use strict";
const fs = require("fs");
const crypto = require("crypto");
const { BlobServiceClient, StorageSharedKeyCredential } = require("@azure/storage-blob");

const CHUNK = 4 * 1024 * 1024;

async function main() {
  const [image, container, blob, inFlightText, mode] = process.argv.slice(2);
  const inFlight = parseInt(inFlightText, 10);
  const service = new BlobServiceClient(process.env.BENCH_URL,
    new StorageSharedKeyCredential("devstoreaccount1", process.env.BENCH_KEY));
  const containerClient = service.getContainerClient(container);
  await containerClient.createIfNotExists();
  const size = fs.statSync(image).size;
  const fh = await fs.promises.open(image, "r");
  const zero = Buffer.alloc(CHUNK);
  const t0 = process.hrtime.bigint();
  const c0 = process.cpuUsage();
  const pageBlob = containerClient.getPageBlobClient(blob);
  await pageBlob.create(size);
  let next = 0, sent = 0, chunks = 0;
  async function worker() {
    const buf = Buffer.alloc(CHUNK);
    for (;;) {
      const off = next;
      if (off >= size) return;
      next += CHUNK;
      const len = Math.min(CHUNK, size - off);
      const { bytesRead } = await fh.read(buf, 0, len, off);
      if (bytesRead !== len) throw new Error(`short read at ${off}`);
      const view = buf.subarray(0, len);
      if (view.equals(zero.subarray(0, len))) continue; // a new page blob reads as zeros already
      const options = mode === "md5" ? { transactionalContentMD5: crypto.createHash("md5").update(view).digest() } : {};
      await pageBlob.uploadPages(view, off, len, options);
      sent += len;
      chunks++;
    }
  }
  await Promise.all(Array.from({ length: inFlight }, worker));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(c0);
  await fh.close();
  console.log(`uploaded image_bytes=${size} sent_bytes=${sent} chunks=${chunks} seconds=${secs.toFixed(3)} cpu_seconds=${((cpu.user + cpu.system) / 1e6).toFixed(3)}`);
}

main().catch((e) => { console.error(`sdk_upload: ${e.message}`); process.exit(1); });
