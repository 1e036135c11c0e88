"""cffi API-mode builder for the native helpers (compiled at install time)."""

from cffi import FFI

CDEF = """
uint16_t amv_ones_complement_sum(const uint8_t *data, size_t length);
size_t amv_next_page(const uint8_t *data, size_t pages, size_t page_size, size_t from, int nonzero);
"""

SOURCE = r"""
#include <stdint.h>
#include <string.h>

/* RFC 1071: the sum is independent of byte order (2.B), so the words are added
   as the CPU loads them, 32 bits at a time into 64 (no carry is lost before
   2^32 loads), folded with end-around carries, and byte-swapped at the end
   when the CPU is little-endian. An odd last byte is its word's first byte. */
uint16_t amv_ones_complement_sum(const uint8_t *data, size_t length) {
    uint64_t sum = 0;
    size_t i = 0;
    for (; i + 4 <= length; i += 4) {
        uint32_t word;
        memcpy(&word, data + i, 4);
        sum += word;
    }
    if (i + 2 <= length) {
        uint16_t half;
        memcpy(&half, data + i, 2);
        sum += half;
        i += 2;
    }
    if (i < length) {
        uint8_t last[2] = { data[i], 0 };
        uint16_t half;
        memcpy(&half, last, 2);
        sum += half;
    }
    while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
    uint16_t folded = (uint16_t)sum;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    folded = (uint16_t)((folded >> 8) | (folded << 8));
#endif
    return folded;
}

static int page_is_zero(const uint8_t *page, size_t size) {
    return page[0] == 0 && memcmp(page, page + 1, size - 1) == 0;
}

/* The first of PAGES pages of PAGE_SIZE bytes at DATA, from page FROM on, that is non-zero (NONZERO)
   or all zero (!NONZERO); PAGES if there is none. */
size_t amv_next_page(const uint8_t *data, size_t pages, size_t page_size, size_t from, int nonzero) {
    for (size_t page = from; page < pages; page++)
        if (page_is_zero(data + page * page_size, page_size) != nonzero) return page;
    return pages;
}
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source("asupermachine._core.native._native_cffi", SOURCE)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
