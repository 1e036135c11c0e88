from asupermachine._core.devices import uart as u
from asupermachine._core.devices.uart import Uart


class Recorder:
    def __init__(self) -> None:
        self.output = bytearray()
        self.interrupts = 0

    def write(self, data: bytes) -> None:
        self.output += data

    def interrupt(self) -> None:
        self.interrupts += 1


def make() -> tuple[Uart, Recorder]:
    recorder = Recorder()
    return Uart(recorder.write, recorder.interrupt), recorder


def test_transmitted_bytes_reach_the_output_in_order() -> None:
    uart, rec = make()
    for byte in b"hello":
        uart.write(u.UART_TX, 1, byte)
    assert rec.output == b"hello"
    assert uart.read(u.UART_LSR) & (u.UART_LSR_THRE | u.UART_LSR_TEMT) == u.UART_LSR_THRE | u.UART_LSR_TEMT


def test_no_interrupts_until_enabled() -> None:
    uart, rec = make()
    uart.write(u.UART_TX, 1, ord("x"))
    uart.receive(b"y")
    assert rec.interrupts == 0
    assert uart.read(u.UART_IIR) & 0x0F == u.UART_IIR_NO_INT


def test_enabling_thre_interrupt_raises_it_and_reading_iir_acknowledges() -> None:
    uart, rec = make()
    uart.write(u.UART_IER, 1, u.UART_IER_THRI)
    assert rec.interrupts == 1
    assert uart.read(u.UART_IIR) & 0x0F == u.UART_IIR_THRI
    assert uart.read(u.UART_IIR) & 0x0F == u.UART_IIR_NO_INT
    uart.write(u.UART_TX, 1, ord("a"))
    assert rec.interrupts == 2


def test_received_bytes_are_read_in_order_with_data_ready_and_interrupt() -> None:
    uart, rec = make()
    uart.write(u.UART_IER, 1, u.UART_IER_RDI)
    assert uart.receive(b"ok") == 2
    assert rec.interrupts >= 1
    assert uart.read(u.UART_IIR) & 0x0F == u.UART_IIR_RDI
    assert uart.read(u.UART_LSR) & u.UART_LSR_DR
    assert bytes([uart.read(u.UART_RX), uart.read(u.UART_RX)]) == b"ok"
    assert not uart.read(u.UART_LSR) & u.UART_LSR_DR


def test_receive_accepts_only_what_fits_in_the_fifo() -> None:
    uart, _ = make()
    assert uart.receive(bytes(u.RX_FIFO_CAPACITY + 10)) == u.RX_FIFO_CAPACITY
    assert uart.receive(b"more") == 0


def test_divisor_latch_is_separate_from_data_registers() -> None:
    uart, rec = make()
    uart.write(u.UART_LCR, 1, u.UART_LCR_DLAB | 0x03)
    uart.write(u.UART_DLL, 1, 0x01)
    uart.write(u.UART_DLM, 1, 0x00)
    assert (uart.read(u.UART_DLL), uart.read(u.UART_DLM)) == (1, 0)
    uart.write(u.UART_LCR, 1, 0x03)
    assert rec.output == b"" and uart.read(u.UART_IER) == 0


def test_loopback_echoes_output_and_mirrors_modem_lines() -> None:
    uart, rec = make()
    uart.write(u.UART_MCR, 1, u.UART_MCR_LOOP | u.UART_MCR_RTS | u.UART_MCR_OUT2)
    assert uart.read(u.UART_MSR) == u.UART_MSR_CTS | u.UART_MSR_DCD
    uart.write(u.UART_TX, 1, ord("z"))
    assert rec.output == b"" and uart.read(u.UART_RX) == ord("z")


def test_fifo_is_reported_as_enabled_so_linux_sees_a_16550a() -> None:
    uart, _ = make()
    assert uart.read(u.UART_IIR) & 0xC0 == 0xC0
    uart.write(u.UART_SCR, 1, 0x5A)
    assert uart.read(u.UART_SCR) == 0x5A


def test_saved_registers_and_unread_input_carry_over_to_a_new_uart() -> None:
    uart, _ = make()
    uart.write(u.UART_LCR, 1, 0x83)
    uart.write(u.UART_DLL, 1, 1)
    uart.write(u.UART_LCR, 1, 0x03)
    uart.write(u.UART_IER, 1, u.UART_IER_RDI)
    uart.receive(b"typed")
    restored, rec = make()
    restored.restore(uart.save())
    assert restored.save() == uart.save()
    assert bytes(restored.read(u.UART_RX) for _ in range(5)) == b"typed"
    assert rec.interrupts == 5 - 1  # one per byte read while more input waits
