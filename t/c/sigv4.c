/*
 * t/asset_sigv4.t's driver: one presigned query string per line of
 * input, "method host path access secret region date expires type length
 * [if-none-match]" (type "-" for none, length -1 for none), on stdout.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ngx_asset_sigv4.h"


int
main(void)
{
    char               line[4096], out[4096], *f[11], *p;
    int                i, n;
    ngx_asset_sigv4_t  req;

    while (fgets(line, sizeof(line), stdin)) {
        line[strcspn(line, "\n")] = '\0';

        for (i = 0, p = strtok(line, " "); p && i < 11;
             p = strtok(NULL, " "))
        {
            f[i++] = p;
        }

        if (i != 10 && i != 11) {
            printf("bad input line\n");
            continue;
        }

        req.method = f[0];
        req.host = f[1];
        req.path = f[2];
        req.access_key = f[3];
        req.secret_key = f[4];
        req.region = f[5];
        req.amz_date = f[6];
        req.expires = atol(f[7]);
        req.content_type = strcmp(f[8], "-") ? f[8] : NULL;
        req.content_length = atoll(f[9]);
        req.if_none_match = (i == 11) ? f[10] : NULL;

        n = ngx_asset_sigv4_presign(&req, out, sizeof(out));
        printf("%s\n", n < 0 ? "error" : out);
    }

    return 0;
}
