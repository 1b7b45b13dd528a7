# Configuration of ngx_asset_module and the presence directives: invalid
# uses stop nginx -t with a message naming the directive; the defaults
# load.

use strict;
use warnings;
use lib 't/lib';
use Test::Chat::Nginx;

run_tests();

__DATA__

=== TEST 1: asset_secret shorter than 32 bytes is refused
--- http_config
asset_secret tooshort;
--- must_die
--- error_log
"asset_secret" must be at least 32 bytes



=== TEST 2: asset_backend takes local or s3
--- http_config
asset_backend ftp;
--- must_die
--- error_log eval
qr/\[emerg\].*invalid value "ftp"/



=== TEST 3: asset_backend s3 needs its endpoint, bucket and keys
--- http_config
asset_backend s3;
asset_s3_endpoint https://s3.example.com;
--- must_die
--- error_log
"asset_backend s3" needs asset_s3_endpoint, asset_s3_bucket, asset_s3_access_key and asset_s3_secret_key



=== TEST 4: asset_s3_endpoint with a path is refused
--- http_config
asset_backend s3;
asset_s3_endpoint https://s3.example.com/bucket;
asset_s3_bucket b;
asset_s3_access_key k;
asset_s3_secret_key s;
--- must_die
--- error_log eval
qr/\[emerg\].*"asset_s3_endpoint" must be http\(s\):\/\/host/



=== TEST 5: asset_blob_url must end with a slash
--- http_config
asset_blob_url /blob;
--- must_die
--- error_log eval
qr/\[emerg\].*"asset_blob_url" must be a path or an http\(s\) URL/



=== TEST 6: asset_types wants media types
--- http_config
asset_types image/png jpeg;
--- must_die
--- error_log
"jpeg" is not a media type



=== TEST 7: asset_url_ttl is at most 7 days
--- http_config
asset_url_ttl 8d;
--- must_die
--- error_log eval
qr/\[emerg\].*value must be between 1 and 604800/



=== TEST 8: chat_presence_lease is at least 3s
--- http_config
chat_presence_lease 1s;
--- must_die
--- error_log
"chat_presence_lease" must be at least 3s



=== TEST 9: asset_api and asset_blob load with every default, s3 too
--- http_config
asset_backend s3;
asset_s3_endpoint http://127.0.0.1:9000;
asset_s3_bucket media;
asset_s3_access_key k;
asset_s3_secret_key s;
asset_s3_path_style on;
--- config
location /v1/media { asset_api; }
location /blob/ { asset_blob on; dav_methods PUT; }
location = /t { return 200 "ok\n"; }
--- request
GET /t
--- response_body
ok
--- no_error_log
[error]
