# TCP flag bits as they sit in the 9-bit flags field (RFC 9293 §3.1; NS/AE from RFC 3540/AccECN).
# Declared once here for the compiled core; Python reads them from ``traceaudit.capture.tcpflags``.
cpdef enum:
    FIN = 0x001
    SYN = 0x002
    RST = 0x004
    PSH = 0x008
    ACK = 0x010
    URG = 0x020
    ECE = 0x040
    CWR = 0x080
    AE = 0x100
