/* crc64.h - the CRC-64 Azure Storage checks in x-ms-content-crc64 (CRC-64/NVME: reflected
 * polynomial 0x9A6C9329AC4BC9B5, initial value and final xor all ones), table-driven (slicing by 8). */
#ifndef AZURE_CRC64_H
#define AZURE_CRC64_H

#include <stddef.h>
#include <stdint.h>

/* crc of data following crc (0 for a new one): blob_crc64(blob_crc64(0, a, n), b, m) equals the
 * CRC of a then b. Check value: "123456789" gives 0xAE8B14860A799888. */
uint64_t blob_crc64(uint64_t crc, const void *data, size_t len);
/* The header's form: the CRC's 8 bytes little-endian, base64 (12 characters and a NUL). */
void blob_crc64_base64(uint64_t crc, char out[13]);

#endif
