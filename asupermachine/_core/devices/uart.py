"""A 16550A-compatible UART (8250 family) as a sans-IO state machine.

Like rust-vmm's vm-superio ``Serial``: it knows nothing of how bytes leave or
how interrupts are raised. It is handed an output callable and an interrupt
callable. Transmission is instant (the THR is always empty), so the guest never
waits on the host. Register layout: the 16550 data sheet / Linux
``include/uapi/linux/serial_reg.h``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

COM1_BASE = 0x3F8
COM1_IRQ = 4
UART_PORT_COUNT = 8

# Register offsets
UART_RX = 0  # receive buffer (read, DLAB=0)
UART_TX = 0  # transmit holding (write, DLAB=0)
UART_DLL = 0  # divisor latch low (DLAB=1)
UART_IER = 1  # interrupt enable (DLAB=0)
UART_DLM = 1  # divisor latch high (DLAB=1)
UART_IIR = 2  # interrupt identification (read)
UART_FCR = 2  # FIFO control (write)
UART_LCR = 3
UART_MCR = 4
UART_LSR = 5
UART_MSR = 6
UART_SCR = 7

UART_LCR_DLAB = 0x80
UART_IER_RDI = 0x01  # receive data available
UART_IER_THRI = 0x02  # transmitter holding register empty
UART_IIR_NO_INT = 0x01
UART_IIR_THRI = 0x02
UART_IIR_RDI = 0x04
UART_IIR_FIFO_ENABLED = 0xC0
UART_LSR_DR = 0x01
UART_LSR_THRE = 0x20
UART_LSR_TEMT = 0x40
UART_MCR_DTR = 0x01
UART_MCR_RTS = 0x02
UART_MCR_OUT1 = 0x04
UART_MCR_OUT2 = 0x08
UART_MCR_LOOP = 0x10
UART_MSR_CTS = 0x10
UART_MSR_DSR = 0x20
UART_MSR_RI = 0x40
UART_MSR_DCD = 0x80
# Lines a connected terminal asserts: carrier, data set ready, clear to send.
MSR_CONNECTED = UART_MSR_DCD | UART_MSR_DSR | UART_MSR_CTS
DEFAULT_DIVISOR = 12  # 9600 baud, what firmware leaves behind
RX_FIFO_CAPACITY = 4096


@dataclass(frozen=True)
class UartState:
    """The registers a snapshot keeps, and input the guest has not read yet."""

    ier: int
    lcr: int
    mcr: int
    scr: int
    divisor: int
    thr_empty_pending: bool
    rx: bytes


class Uart:
    """One 8250/16550A UART: register ``read``/``write`` by offset (a bus device), ``receive`` host input."""

    def __init__(self, output: Callable[[bytes], None], interrupt: Callable[[], None]) -> None:
        self._output = output
        self._interrupt = interrupt
        self._rx: deque[int] = deque()
        self._ier = 0
        self._lcr = 0x03  # 8N1
        self._mcr = UART_MCR_OUT2
        self._scr = 0
        self._divisor = DEFAULT_DIVISOR
        self._thr_empty_pending = False

    # -- guest side ------------------------------------------------------------

    def read(self, offset: int, size: int = 1) -> int:
        dlab = self._lcr & UART_LCR_DLAB
        if offset == UART_RX:
            return self._divisor & 0xFF if dlab else self._pop_rx()
        if offset == UART_IER:
            return self._divisor >> 8 if dlab else self._ier
        if offset == UART_IIR:
            iir = self._identify()
            if iir == UART_IIR_THRI:
                self._thr_empty_pending = False  # reading IIR acknowledges THRE
            return iir | UART_IIR_FIFO_ENABLED
        if offset == UART_LCR:
            return self._lcr
        if offset == UART_MCR:
            return self._mcr
        if offset == UART_LSR:
            return UART_LSR_THRE | UART_LSR_TEMT | (UART_LSR_DR if self._rx else 0)
        if offset == UART_MSR:
            return self._modem_status()
        if offset == UART_SCR:
            return self._scr
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        dlab = self._lcr & UART_LCR_DLAB
        if offset == UART_TX:
            if dlab:
                self._divisor = (self._divisor & 0xFF00) | value
            elif self._mcr & UART_MCR_LOOP:
                self._push_rx(bytes([value]))
            else:
                self._output(bytes([value]))
                self._thr_empty_pending = True
                self._update_interrupt()
        elif offset == UART_IER:
            if dlab:
                self._divisor = (self._divisor & 0x00FF) | (value << 8)
            else:
                enabling_thri = value & UART_IER_THRI and not self._ier & UART_IER_THRI
                self._ier = value & 0x0F
                if enabling_thri:
                    # The THR is always empty: enabling its interrupt raises it at once.
                    self._thr_empty_pending = True
                self._update_interrupt()
        elif offset == UART_LCR:
            self._lcr = value
        elif offset == UART_MCR:
            self._mcr = value & 0x1F
        elif offset == UART_SCR:
            self._scr = value
        # UART_FCR: FIFOs are always on and never need resetting here.

    # -- host side -------------------------------------------------------------

    def receive(self, data: bytes) -> int:
        """Queue host input for the guest; returns how many bytes fit (the rest must wait)."""
        return self._push_rx(data)

    @property
    def rx_space(self) -> int:
        return RX_FIFO_CAPACITY - len(self._rx)

    def save(self) -> UartState:
        return UartState(
            self._ier, self._lcr, self._mcr, self._scr, self._divisor, self._thr_empty_pending, bytes(self._rx)
        )

    def restore(self, state: UartState) -> None:
        self._ier, self._lcr, self._mcr = state.ier & 0x0F, state.lcr & 0xFF, state.mcr & 0x1F
        self._scr, self._divisor = state.scr & 0xFF, state.divisor & 0xFFFF
        self._thr_empty_pending = state.thr_empty_pending
        self._rx = deque(state.rx[:RX_FIFO_CAPACITY])

    # -- internals -------------------------------------------------------------

    def _push_rx(self, data: bytes) -> int:
        accepted = data[: self.rx_space]
        self._rx.extend(accepted)
        if accepted:
            self._update_interrupt()
        return len(accepted)

    def _pop_rx(self) -> int:
        value = self._rx.popleft() if self._rx else 0
        self._update_interrupt()
        return value

    def _identify(self) -> int:
        if self._ier & UART_IER_RDI and self._rx:
            return UART_IIR_RDI
        if self._ier & UART_IER_THRI and self._thr_empty_pending:
            return UART_IIR_THRI
        return UART_IIR_NO_INT

    def _update_interrupt(self) -> None:
        if self._identify() != UART_IIR_NO_INT:
            self._interrupt()

    def _modem_status(self) -> int:
        if not self._mcr & UART_MCR_LOOP:
            return MSR_CONNECTED
        # Loopback wires the modem control outputs back to the status inputs.
        status = 0
        if self._mcr & UART_MCR_RTS:
            status |= UART_MSR_CTS
        if self._mcr & UART_MCR_DTR:
            status |= UART_MSR_DSR
        if self._mcr & UART_MCR_OUT1:
            status |= UART_MSR_RI
        if self._mcr & UART_MCR_OUT2:
            status |= UART_MSR_DCD
        return status
