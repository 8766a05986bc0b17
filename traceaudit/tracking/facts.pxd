# The facts the endpoint trackers establish, declared once: the compiled tracker writes these
# structs, and Python sees them as NumPy structured arrays whose dtypes are built from them
# (``traceaudit.tracking.facts.ENDPOINT_FACTS`` / ``CONN_FACTS``), so that rules and reports read
# ``facts["cw_since_ns"]`` by name. Every field is an int64; frames are 1-based capture frame
# numbers (-1: none), times are epoch nanoseconds, sequence numbers are "unwrapped" (64-bit,
# relative to the endpoint's base) unless called raw.
from libc.stdint cimport int64_t


ctypedef struct EndpointFacts:
    # one endpoint of one connection: [conn, 0] is the client, [conn, 1] the server
    int64_t state               # EndpointState now (UNSEEN until it takes part)
    int64_t seen                # 1 once it has sent at least one segment
    int64_t seq_base_set        # 1 once seq_base is known
    int64_t seq_base            # raw sequence number that maps to unwrapped 0
    int64_t snd_nxt             # highest unwrapped sequence end it has sent
    int64_t isn_seen            # 1 when it sent a SYN (ISN = unwrapped 0)
    int64_t fin_sent            # 1 when it sent a FIN
    int64_t fin_seq             # unwrapped sequence number of its FIN
    int64_t fin_frame           # its first FIN
    int64_t fin_ns
    int64_t fin_count           # transmissions of its FIN (retransmissions + 1)
    int64_t fin_acked           # 1 when the peer acknowledged its FIN
    int64_t fin_acked_frame
    int64_t got_fin             # 1 when it received the peer's FIN
    int64_t got_fin_frame
    int64_t ack_set             # 1 once it has sent an ACK
    int64_t rcv_nxt             # highest unwrapped ACK it sent (in the peer's sequence space)
    int64_t rst_count           # RST segments it sent
    int64_t rst_frame           # its first RST
    int64_t rst_ns
    int64_t rst_from_state      # its state just before its first RST
    int64_t rst_flags           # TCP flags of its first RST (ACK tells RST|ACK from a bare RST)
    int64_t rst_answers_frame   # frame of the peer segment its first RST answers; -1 unsolicited
    int64_t rst_answers_kind    # what that segment carried: Answered bits (data, FIN, SYN, FIN again)
    int64_t tw_since_ns         # when it entered TIME_WAIT
    int64_t tw_frame
    int64_t state_since_ns      # when it entered its current state
    int64_t data_pkts           # segments with payload it sent
    int64_t last_data_frame
    int64_t last_data_ns
    int64_t last_frame          # its last segment
    int64_t last_ns
    int64_t last_flags
    int64_t last_ack_raw        # raw ack field of its last segment
    int64_t last_seq_end        # unwrapped sequence end of its last segment
    # what its non-RST segments carry at this vantage point, that an RST with its address is
    # compared with (RST origin, below; beside the fields every segment updates)
    int64_t ttl_lo              # lowest TTL / hop limit of its non-RST segments (256: none yet)
    int64_t ttl_hi              # highest (-1: none yet)
    int64_t ts_missing          # its non-RST segments without the timestamps option
    int64_t tsval_last          # TSval of its latest non-RST segment with timestamps (-1: none)
    int64_t ip_id_last          # IPv4 ID of its latest non-RST segment with a nonzero ID (-1: none)
    int64_t ip_id_steps         # consecutive nonzero IDs of its non-RST segments that rose by 1-256
    int64_t ip_id_jumps         # ... that did not (a random or global ID: no sequence to judge by)
    int64_t fin_retx_frame      # first retransmission of its FIN
    int64_t keepalives          # keepalive probes it sent (seq = snd_nxt - 1, 0/1 byte, nothing new)
    int64_t keepalives_half_closed  # ... of which while the connection was half-closed
    int64_t fw2_since_ns        # when it entered FIN_WAIT_2
    int64_t cw_since_ns         # when it entered CLOSE_WAIT
    int64_t cw_frame
    int64_t fw2_frame
    int64_t syn_count           # SYN (or SYN-ACK) transmissions
    int64_t hindsight           # Hindsight bits: corrections the timeline applies afterwards
    int64_t data_after_fin      # segments with payload it received after it sent its FIN
    int64_t zero_windows        # zero-window advertisements it sent
    int64_t syn_last_frame      # its last SYN or SYN-ACK transmission
    int64_t syn_last_ns
    int64_t syn_prev_ns         # the SYN or SYN-ACK transmission before its last one (0: none)
    int64_t gave_up_ns          # when it dropped its half-open connection: SYN_RECEIVED ended
                                # after its last SYN-ACK retransmission's backoff (0: never)
    int64_t first_frame         # its first segment (of the current incarnation)
    int64_t first_ns
    int64_t http_requests_in    # HTTP/1.x requests it received (message starts the decoder saw
                                # in the peer's new data, the app_marks column) before its own
                                # first RST; retransmitted bytes are not counted again
    int64_t http_responses_out  # HTTP/1.x responses it sent (the same way) before its first RST
    # -- who sent its first RST (kernel.pyx, "RST origin"): what the RST carried, and the
    # verdict
    int64_t rst_ttl             # TTL / hop limit of its first RST (-1: no RST)
    int64_t rst_ip_id           # IPv4 ID of its first RST (-1: none, IPv6)
    int64_t rst_tsval           # TSval of its first RST (-1: no timestamps option)
    int64_t rst_seq             # unwrapped sequence number of its first RST
    int64_t rst_seq_gap         # rst_seq minus its snd_nxt then (0: where its next byte would be)
    int64_t rst_idle_ns         # how long the connection had been idle (both ESTABLISHED) before
                                # the peer's segments its first RST came after (-1: it did not
                                # come right after the peer's, or no such idle)
    int64_t race_segs           # its own non-RST segments after its first RST that carry new
                                # sequence or acknowledgment numbers, with its usual TTL (the
                                # race a box that forges a reset cannot win)
    int64_t race_frame          # the first of them (-1: none)
    int64_t rst_evidence        # RstEvidence bits: what says its first RST came from the path
    int64_t rst_origin          # RstOrigin of its first RST: NO_RST, ENDPOINT, PATH
    int64_t rst_confidence      # Confidence of that verdict (0 when no RST)


ctypedef struct ConnFacts:
    # one connection
    int64_t initialised         # 1 once the tracker set the connection up
    int64_t run_idle_ns         # the longest idle time before or within the current run of one
                                # endpoint's segments (updated at every segment, hence here)
    int64_t midstream           # 1 when the capture starts after the handshake
    int64_t closer              # Closer: who sent the first FIN or RST
    int64_t close_frame         # first FIN or RST
    int64_t close_ns
    int64_t synack_seen         # 1 when a SYN-ACK was seen
    int64_t refused             # 1: SYN answered by an acceptable RST before any SYN-ACK
    int64_t rst_accepted        # 1: an RST ended the connection
    int64_t tw_recycled_frame   # the SYN that ended this connection's TIME_WAIT
    int64_t prev                # previous incarnation of the same 4-tuple, -1 when none
    int64_t prev_in_time_wait   # 1 when that previous incarnation was still in TIME_WAIT
    int64_t incarnation         # the trackers' incarnation of this connection id: 0, then 1, 2 ...
                                # each time the same 4-tuple and ISNs came back long after it
                                # ended (a replayed or merged capture; kernel.pyx); every other
                                # fact is the current incarnation's
    int64_t incarnation_frame   # first segment of the current incarnation (-1: the first one)
    int64_t incarnation_ns
    int64_t idle_survived_ns    # the longest run_idle_ns the other endpoint answered with a
                                # segment that was not an RST, both ESTABLISHED then
