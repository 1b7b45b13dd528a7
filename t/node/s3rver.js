#!/usr/bin/env node
// A local S3-compatible store for t/asset_s3.t: s3rver on 127.0.0.1:PORT,
// objects under DIR, one bucket BUCKET, the default S3RVER/S3RVER keys
// (s3rver does not check SigV4 signatures). With KEY and CERT files it
// speaks HTTPS. Prints "ready" once it listens; runs until killed.
//
//   node t/node/s3rver.js PORT DIR BUCKET [KEY CERT]

'use strict';

const fs = require('fs');
const S3rver = require('s3rver');

const [port, dir, bucket, key, cert] = process.argv.slice(2);

new S3rver({
    address: '127.0.0.1',
    port: Number(port),
    directory: dir,
    silent: true,
    configureBuckets: [{ name: bucket }],
    ...(key && cert ? { key: fs.readFileSync(key),
                        cert: fs.readFileSync(cert) } : {}),
}).run().then(
    () => console.log('ready'),
    (err) => { console.error(err.message); process.exit(1); });
