#!/usr/bin/env python3
# Reference presigned URLs from botocore (Debian: python3-botocore) for
# t/asset_sigv4.t: for each case, the driver's input line, a tab, and the
# query string botocore signs, at fixed times.

import datetime
from unittest import mock
from urllib.parse import urlsplit

import botocore.auth
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

CASES = [
    # method, endpoint, path, key id, secret, region, time, expires,
    # content type, content length, If-None-Match
    ('GET', 'https://examplebucket.s3.amazonaws.com', '/test.txt',
     'AKIAIOSFODNN7EXAMPLE', 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
     'us-east-1', '20130524T000000Z', 86400, None, -1, None),
    ('PUT', 'http://127.0.0.1:4569', '/media/GlCRjre92Kcvl2sPa4PyYQ',
     'S3RVER', 'S3RVER', 'us-east-1', '20261128T101010Z', 900,
     'image/png', 3008, None),
    ('GET', 'https://media.example.com', '/bucket/a-b_c~d.e',
     'AKID', 'secret/with+chars=', 'eu-west-3', '20300101T235959Z', 604800,
     None, -1, None),
    ('PUT', 'https://s3.eu-central-1.amazonaws.com', '/chat-media/x',
     'AKIDEXAMPLE', 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY',
     'eu-central-1', '20261231T120000Z', 60,
     'application/vnd.openxmlformats-officedocument.wordprocessingml.document',
     67108864, None),
    # the module's uploads: a conditional write (S3 creates, never replaces)
    ('PUT', 'http://127.0.0.1:4569', '/media/GlCRjre92Kcvl2sPa4PyYQ',
     'S3RVER', 'S3RVER', 'us-east-1', '20261128T101010Z', 900,
     'image/png', 3008, '*'),
    ('PUT', 'https://chat-media.s3.eu-central-1.amazonaws.com',
     '/AAAAAAAAAAAAAAAAAAAAAA', 'AKIDEXAMPLE',
     'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', 'eu-central-1',
     '20261231T120000Z', 900, 'audio/ogg', 1, '*'),
]

for (method, endpoint, path, akid, secret, region, when, expires, ctype,
     length, none_match) in CASES:
    headers = {}
    if ctype:
        headers['Content-Type'] = ctype
    if length >= 0:
        headers['Content-Length'] = str(length)
    if none_match:
        headers['If-None-Match'] = none_match
    req = AWSRequest(method=method, url=endpoint + path, headers=headers)
    fixed = datetime.datetime.strptime(when, '%Y%m%dT%H%M%SZ')
    signer = S3SigV4QueryAuth(Credentials(akid, secret), 's3', region,
                              expires=expires)
    # the clock: get_current_datetime() in newer botocore, utcnow() in
    # Debian's
    if hasattr(botocore.auth, 'get_current_datetime'):
        with mock.patch('botocore.auth.get_current_datetime',
                        return_value=fixed):
            signer.add_auth(req)
    else:
        with mock.patch('botocore.auth.datetime') as dt:
            dt.datetime.utcnow.return_value = fixed
            signer.add_auth(req)
    host = urlsplit(endpoint).netloc
    line = ' '.join([method, host, path, akid, secret, region, when,
                     str(expires), ctype or '-', str(length)]
                    + ([none_match] if none_match else []))
    print(line + '\t' + urlsplit(req.url).query)
