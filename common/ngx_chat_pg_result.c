
/*
 * Reading PostgreSQL results and writing parameters: what the callers of
 * the pool (ngx_chat_pg.c) share to turn rows into values and values
 * into statements' parameters.  No connection state: the fuzz targets
 * (fuzz/) link these with results they make.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_chat_pg.h"


ngx_uint_t
ngx_chat_pg_ok(PGresult *res)
{
    ExecStatusType  status;

    if (res == NULL) {
        return 0;
    }

    status = PQresultStatus(res);

    return status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK;
}


void
ngx_chat_pg_value(PGresult *res, int row, int col, ngx_str_t *value)
{
    value->data = (u_char *) PQgetvalue(res, row, col);
    value->len = PQgetlength(res, row, col);
}


/* an integer column (a status, a seq, an id); NULL or not one: -1 */

int64_t
ngx_chat_pg_int(PGresult *res, int row, int col)
{
    int  len;

    len = PQgetlength(res, row, col);

    if (len == 0 || len > (int) NGX_INT64_LEN) {
        return -1;
    }

    return (int64_t) ngx_atoof((u_char *) PQgetvalue(res, row, col), len);
}


/* a bigint[] parameter, "{1,2,3}", in a buffer sized for n values */

ngx_int_t
ngx_chat_pg_array_init(ngx_chat_pg_array_t *a, ngx_uint_t n, ngx_log_t *log)
{
    a->value.data = ngx_alloc(n * (NGX_INT64_LEN + 1) + 2, log);
    if (a->value.data == NULL) {
        return NGX_ERROR;
    }

    a->value.data[0] = '{';
    a->value.len = 1;

    return NGX_OK;
}


void
ngx_chat_pg_array_add(ngx_chat_pg_array_t *a, int64_t value)
{
    u_char  *p;

    p = a->value.data + a->value.len;

    if (a->value.len > 1) {
        *p++ = ',';
    }

    p = ngx_sprintf(p, "%L", value);
    a->value.len = p - a->value.data;
}


/* the array, closed: a parameter for ngx_chat_pg_query(), which copies it */

ngx_str_t *
ngx_chat_pg_array_value(ngx_chat_pg_array_t *a)
{
    a->value.data[a->value.len] = '}';
    a->value.len++;

    return &a->value;
}


void
ngx_chat_pg_array_free(ngx_chat_pg_array_t *a)
{
    ngx_free(a->value.data);
    a->value.data = NULL;
}


/* for statements whose outcome nobody waits for: errors are logged */

void
ngx_chat_pg_ignore(void *data, PGresult *res)
{
}
