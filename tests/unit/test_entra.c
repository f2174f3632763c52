/* test_entra.c - Description: Entra ID service-principal sign-in pieces: the client assertion JWT
 * (header with x5t and x5t#S256 of the certificate, exact claims, an RS256 signature that verifies
 * with the certificate and fails once a byte changes; refusals of PEM without key, with a foreign
 * or non-RSA key), base64url, the form body's encoding, token and OAuth error JSON parsing, the
 * connection-string keys and the credential file checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "blob_internal.h"
#include "tmpdir.h"

/* A self-signed certificate for cert_key as PEM, followed by file_key's PEM when given. */
static char *make_pem(EVP_PKEY *cert_key, EVP_PKEY *file_key, size_t *len)
{
  X509 *x = X509_new();
  assert_non_null(x);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
  X509_gmtime_adj(X509_getm_notBefore(x), 0);
  X509_gmtime_adj(X509_getm_notAfter(x), 3600);
  X509_set_pubkey(x, cert_key);
  X509_NAME *name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"test client", -1, -1, 0);
  X509_set_issuer_name(x, name);
  assert_true(X509_sign(x, cert_key, EVP_sha256()) > 0);
  BIO *b = BIO_new(BIO_s_mem());
  assert_int_equal(PEM_write_bio_X509(b, x), 1);
  if (file_key)
    assert_int_equal(PEM_write_bio_PrivateKey(b, file_key, NULL, NULL, 0, NULL, NULL), 1);
  char *data;
  long n = BIO_get_mem_data(b, &data);
  char *out = malloc((size_t)n + 1);
  memcpy(out, data, (size_t)n);
  out[n] = '\0';
  *len = (size_t)n;
  BIO_free(b);
  X509_free(x);
  return out;
}

/* base64url decoding, independent of the code under test: standard base64 after translation. */
static size_t unb64url(const char *in, size_t len, unsigned char *out)
{
  char tmp[4096];
  assert_true(len + 4 < sizeof tmp);
  for (size_t i = 0; i < len; i++)
    tmp[i] = in[i] == '-' ? '+' : in[i] == '_' ? '/' : in[i];
  size_t n = len;
  while (n % 4)
    tmp[n++] = '=';
  int got = EVP_DecodeBlock(out, (const unsigned char *)tmp, (int)n);
  assert_true(got >= 0);
  return (size_t)got - (n - len);
}

static void thumb(X509 *x, const EVP_MD *md, char *out)
{
  unsigned char d[EVP_MAX_MD_SIZE], b64[128];
  unsigned int dl;
  assert_int_equal(X509_digest(x, md, d, &dl), 1);
  int n = EVP_EncodeBlock(b64, d, (int)dl);
  size_t o = 0;
  for (int i = 0; i < n; i++)
    if (b64[i] != '=')
      out[o++] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char)b64[i];
  out[o] = '\0';
}

static void test_assertion(void **state)
{
  (void)state;
  EVP_PKEY *key = EVP_RSA_gen(2048);
  assert_non_null(key);
  size_t len;
  char *pem = make_pem(key, key, &len);
  const char *aud = "https://login.microsoftonline.com/tenant.example.com/oauth2/v2.0/token";
  char jwt[8192];
  assert_int_equal(blob_entra_assertion(pem, len, "3f2a9c4e-1b7d-4e8a-9c6f-0d2e4b6a8c10", aud, 1700000000,
                                        "0f8fad5b-d9cb-469f-a165-70867728950e", jwt, sizeof jwt), RPL_OK);
  char *dot1 = strchr(jwt, '.'), *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
  assert_non_null(dot2);
  assert_null(strchr(dot2 + 1, '.'));
  assert_null(strpbrk(jwt, "=+/ \n"));
  unsigned char header[512], claims[1024], sig[512];
  size_t hl = unb64url(jwt, (size_t)(dot1 - jwt), header);
  size_t cl = unb64url(dot1 + 1, (size_t)(dot2 - dot1 - 1), claims);
  size_t sl = unb64url(dot2 + 1, strlen(dot2 + 1), sig);
  header[hl] = claims[cl] = '\0';
  BIO *b = BIO_new_mem_buf(pem, (int)len);
  X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
  BIO_free(b);
  char x5t[64], x5t256[64], want[512];
  thumb(x, EVP_sha1(), x5t);
  thumb(x, EVP_sha256(), x5t256);
  snprintf(want, sizeof want, "{\"alg\":\"RS256\",\"typ\":\"JWT\",\"x5t\":\"%s\",\"x5t#S256\":\"%s\"}", x5t, x5t256);
  assert_string_equal((char *)header, want);
  assert_string_equal((char *)claims,
                      "{\"aud\":\"https://login.microsoftonline.com/tenant.example.com/oauth2/v2.0/token\","
                      "\"iss\":\"3f2a9c4e-1b7d-4e8a-9c6f-0d2e4b6a8c10\",\"sub\":\"3f2a9c4e-1b7d-4e8a-9c6f-0d2e4b6a8c10\","
                      "\"jti\":\"0f8fad5b-d9cb-469f-a165-70867728950e\",\"iat\":1700000000,\"nbf\":1700000000,\"exp\":1700000600}");
  assert_int_equal(sl, 256);
  /* The signature covers "header.claims" and verifies with the certificate's public key. */
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, X509_get0_pubkey(x)), 1);
  assert_int_equal(EVP_DigestVerify(md, sig, sl, (unsigned char *)jwt, (size_t)(dot2 - jwt)), 1);
  EVP_MD_CTX_free(md);
  jwt[(dot2 - jwt) - 3] ^= 1; /* one character of the claims changed */
  md = EVP_MD_CTX_new();
  assert_int_equal(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, X509_get0_pubkey(x)), 1);
  assert_int_not_equal(EVP_DigestVerify(md, sig, sl, (unsigned char *)jwt, (size_t)(dot2 - jwt)), 1);
  EVP_MD_CTX_free(md);
  /* Too small an output buffer. */
  char small[300];
  assert_int_equal(blob_entra_assertion(pem, len, "c", aud, 1, "j", small, sizeof small), RPL_E_LIMIT);
  X509_free(x);
  free(pem);
  EVP_PKEY_free(key);
}

static void expect_pem_refused(const char *pem, size_t len, const char *phrase)
{
  char jwt[8192];
  rpl_detail_clear();
  rpl_err err = blob_entra_assertion(pem, len, "c", "https://a/t/oauth2/v2.0/token", 1, "j", jwt, sizeof jwt);
  if (err != RPL_E_ENTRA_CREDENTIAL || !strstr(rpl_detail(err), phrase))
    fail_msg("got %s '%s', wanted '%s'", rpl_errname(err), rpl_detail(err), phrase);
}

static void test_assertion_refusals(void **state)
{
  (void)state;
  EVP_PKEY *key = EVP_RSA_gen(2048), *other = EVP_RSA_gen(2048), *ec = EVP_EC_gen("P-256");
  assert_non_null(key);
  assert_non_null(other);
  assert_non_null(ec);
  size_t len;
  char *pem = make_pem(key, NULL, &len);
  expect_pem_refused(pem, len, "no unencrypted private key");
  free(pem);
  pem = make_pem(key, other, &len);
  expect_pem_refused(pem, len, "does not belong to the certificate");
  free(pem);
  pem = make_pem(ec, ec, &len);
  expect_pem_refused(pem, len, "not RSA");
  free(pem);
  expect_pem_refused("s3cret\n", 7, "no certificate");
  EVP_PKEY_free(key);
  EVP_PKEY_free(other);
  EVP_PKEY_free(ec);
}

static void test_base64url(void **state)
{
  (void)state;
  char out[16];
  static const struct { const char *in; const char *out; } v[] = {
    {"", ""}, {"f", "Zg"}, {"fo", "Zm8"}, {"foo", "Zm9v"}, {"foob", "Zm9vYg"}, {"\xfb\xff", "-_8"},
  };
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    assert_true(blob_base64url((const unsigned char *)v[i].in, strlen(v[i].in), out, sizeof out));
    assert_string_equal(out, v[i].out);
  }
  assert_false(blob_base64url((const unsigned char *)"foob", 4, out, 6)); /* 6 characters + NUL */
}

static void test_form(void **state)
{
  (void)state;
  char form[1024];
  assert_int_equal(blob_entra_form("abc-1", "a+b/c=d&e f~_.", NULL, form, sizeof form), RPL_OK);
  assert_string_equal(form, "grant_type=client_credentials&client_id=abc-1&scope=https%3A%2F%2Fstorage.azure.com%2F.default"
                            "&client_secret=a%2Bb%2Fc%3Dd%26e%20f~_.");
  assert_int_equal(blob_entra_form("abc-1", NULL, "h.c.s", form, sizeof form), RPL_OK);
  assert_string_equal(form, "grant_type=client_credentials&client_id=abc-1&scope=https%3A%2F%2Fstorage.azure.com%2F.default"
                            "&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"
                            "&client_assertion=h.c.s");
  char small[40];
  assert_int_equal(blob_entra_form("abc-1", "secret", NULL, small, sizeof small), RPL_E_LIMIT);
  assert_null(strstr(small, "secret")); /* wiped, not left half-written */
}

static void test_token_json(void **state)
{
  (void)state;
  const char ok[] = "{\"token_type\":\"Bearer\",\"expires_in\":3599,\"ext_expires_in\":3599,\"access_token\":\"eyJ0.eyJh.c2ln\"}";
  struct blob_token t;
  assert_int_equal(blob_token_parse(ok, strlen(ok), 1000, &t), RPL_OK);
  assert_string_equal(t.access_token, "eyJ0.eyJh.c2ln");
  assert_int_equal(t.expires_on, 4599);
  const char err[] = "{\"error\":\"invalid_client\",\"error_description\":\"AADSTS7000215: Invalid client secret provided. "
                     "Ensure the secret being sent in the request is the client secret value.\\r\\nTrace ID: 1\\r\\n\","
                     "\"error_codes\":[7000215],\"timestamp\":\"2026-01-01 00:00:00Z\",\"nested\":{\"a\":[1,{\"b\":null}]},"
                     "\"trace_id\":\"1\"}";
  char error[64], desc[128];
  assert_int_equal(blob_token_parse_error(err, strlen(err), error, sizeof error, desc, sizeof desc), RPL_OK);
  assert_string_equal(error, "invalid_client");
  /* The first line only; cut to fit a smaller buffer. */
  assert_string_equal(desc, "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the "
                            "client secret value.");
  char shorter[14];
  assert_int_equal(blob_token_parse_error(err, strlen(err), error, sizeof error, shorter, sizeof shorter), RPL_OK);
  assert_string_equal(shorter, "AADSTS7000215");
  assert_int_equal(blob_token_parse_error("{}", 2, error, sizeof error, desc, sizeof desc), RPL_OK);
  assert_string_equal(error, "");
  assert_string_equal(desc, "");
  const char *bad[] = {"", "<html>", "[1]", "{\"error\":\"x\"", "{\"error\":[1,}", "{\"a\":1,}"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(blob_token_parse_error(bad[i], strlen(bad[i]), error, sizeof error, desc, sizeof desc), RPL_E_BLOB_TOKEN);
}

static void expect_connstr_bad(const char *text, const char *phrase)
{
  struct blob_account a;
  rpl_detail_clear();
  rpl_err err = blob_connstr_parse(text, &a);
  if (err != RPL_E_BLOB_CONNSTR || !strstr(rpl_detail(err), phrase))
    fail_msg("'%s': got %s '%s', wanted '%s'", text, rpl_errname(err), rpl_detail(err), phrase);
}

static void test_connstr(void **state)
{
  (void)state;
  struct blob_account a;
  assert_int_equal(blob_connstr_parse("AccountName=acct1;TenantId=contoso.onmicrosoft.com;ClientId=3f2a9c4e-1b7d;"
                                      "ClientSecretFile=/etc/rpl/secret", &a), RPL_OK);
  assert_int_equal(a.auth, BLOB_AUTH_CLIENT_SECRET);
  assert_true(blob_auth_is_bearer(a.auth));
  assert_string_equal(a.tenant, "contoso.onmicrosoft.com");
  assert_string_equal(a.client_id, "3f2a9c4e-1b7d");
  assert_string_equal(a.credential_file, "/etc/rpl/secret");
  assert_string_equal(a.authority, "https://login.microsoftonline.com");
  assert_string_equal(a.endpoint, "https://acct1.blob.core.windows.net:443");
  assert_string_equal(blob_auth_name(a.auth), "service principal (client secret)");
  char url[512];
  assert_int_equal(blob_entra_token_url(&a, url, sizeof url), RPL_OK);
  assert_string_equal(url, "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token");
  assert_int_equal(blob_connstr_parse("BlobEndpoint=https://acct1.blob.core.usgovcloudapi.net;tenantid=t-1;clientid=c-1;"
                                      "ClientCertificateFile=/c.pem;AuthorityHost=https://login.microsoftonline.us/", &a), RPL_OK);
  assert_int_equal(a.auth, BLOB_AUTH_CLIENT_CERT);
  assert_string_equal(a.authority, "https://login.microsoftonline.us");
  assert_int_equal(blob_entra_token_url(&a, url, sizeof url), RPL_OK);
  assert_string_equal(url, "https://login.microsoftonline.us/t-1/oauth2/v2.0/token");
  expect_connstr_bad("AccountName=acct1;AccountKey=AAAA;TenantId=t;ClientId=c;ClientSecretFile=/s", "cannot be combined");
  expect_connstr_bad("AccountName=acct1;TenantId=t;ClientSecretFile=/s", "ClientId");
  expect_connstr_bad("AccountName=acct1;ClientId=c;ClientSecretFile=/s", "TenantId");
  expect_connstr_bad("AccountName=acct1;TenantId=t/../x;ClientId=c;ClientSecretFile=/s", "TenantId");
  expect_connstr_bad("AccountName=acct1;TenantId=t;ClientId=c", "one of ClientSecretFile or ClientCertificateFile");
  expect_connstr_bad("AccountName=acct1;TenantId=t;ClientId=c;ClientSecretFile=/s;ClientCertificateFile=/c", "one of");
  expect_connstr_bad("AccountName=acct1;TenantId=t;ClientId=c;ClientSecretFile=secret.txt", "absolute path");
  expect_connstr_bad("AccountName=acct1;TenantId=t;ClientId=c;ClientSecretFile=/s;AuthorityHost=http://login", "AuthorityHost");
  expect_connstr_bad("AccountName=acct1;TenantId=t;ClientId=c;ClientSecretFile=/s;AuthorityHost=https://h/x?y", "AuthorityHost");
}

static char tmp_dir[PATH_MAX];

static int make_tmp(void **state)
{
  (void)state;
  return tmpdir_create(tmp_dir, sizeof tmp_dir, "entra");
}

static int remove_tmp(void **state)
{
  (void)state;
  tmpdir_remove(tmp_dir);
  return 0;
}

static void test_credential_files(void **state)
{
  (void)state;
  const char *dir = tmp_dir;
  char path[PATH_MAX + 16];
  snprintf(path, sizeof path, "%s/secret", dir);
  FILE *f = fopen(path, "w");
  fputs("the-secret \r\nsecond line\n", f);
  fclose(f);
  assert_int_equal(blob_entra_check_credential(BLOB_AUTH_CLIENT_SECRET, path), RPL_OK);
  rpl_err err = blob_entra_check_credential(BLOB_AUTH_CLIENT_CERT, path);
  assert_int_equal(err, RPL_E_ENTRA_CREDENTIAL);
  assert_non_null(strstr(rpl_detail(err), "no certificate"));
  assert_null(strstr(rpl_detail(err), "the-secret"));
  f = fopen(path, "w");
  fputs("\n", f);
  fclose(f);
  err = blob_entra_check_credential(BLOB_AUTH_CLIENT_SECRET, path);
  assert_int_equal(err, RPL_E_ENTRA_CREDENTIAL);
  assert_non_null(strstr(rpl_detail(err), "first line"));
  snprintf(path, sizeof path, "%s/missing", dir);
  err = blob_entra_check_credential(BLOB_AUTH_CLIENT_SECRET, path);
  assert_int_equal(err, RPL_E_ENTRA_CREDENTIAL);
  assert_non_null(strstr(rpl_detail(err), "cannot read"));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_assertion),      cmocka_unit_test(test_assertion_refusals),
    cmocka_unit_test(test_base64url),      cmocka_unit_test(test_form),
    cmocka_unit_test(test_token_json),     cmocka_unit_test(test_connstr),
    cmocka_unit_test_setup_teardown(test_credential_files, make_tmp, remove_tmp),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
