"""Automatic transcripts: samples added without a reference text get one from a speech recogniser.

Until then a sample is usable in x-vector-only mode, so nothing waits on this: a background filler (woken right
after such an AddSample, and every interval as the safety net for restarts and recogniser outages) asks the
recogniser and stores the text as machine-made, which the user may edit like any other.

Rules, all enforced by conditional writes in the repository so that several replicas can run a filler at once:

* a sample is *claimed* before it is transcribed (one more attempt counted, next attempt not before a back-off),
  so two fillers never transcribe it together;
* the text is stored only while the sample still needs one: a text the user typed meanwhile wins, and a deleted
  sample is skipped;
* a recogniser that hears nothing (music, noise) costs an attempt; after ``max_attempts`` the sample is left as it
  is (still usable, still editable), instead of being retried forever;
* a recogniser that cannot be reached costs nothing: the claim is released and the next round tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from voice_common.errors import DomainError, FailedPrecondition, InvalidArgument, NotFound
from voice_common.periodic import OutageCheck, repeat
from voice_profiles.domain.database_ports import Database
from voice_profiles.domain.limits import Limits
from voice_profiles.domain.samples import check_reference_text

log = logging.getLogger(__name__)


class SpeechTranscriber(Protocol):
    async def transcribe_sample(self, tenant_id: str, sample_id: str) -> str:
        """The text spoken in the stored sample ("" when no speech is heard).

        Raises NotFound when the sample is gone, InvalidArgument/FailedPrecondition when the recogniser refuses
        this audio, and Unavailable when the recogniser cannot answer now.
        """
        ...


@dataclass(frozen=True)
class TranscriptPolicy:
    batch: int = 20  # samples per round
    max_attempts: int = 3  # attempts that reached the recogniser, after which a sample is left alone
    retry_after: timedelta = timedelta(minutes=5)  # back-off after the first attempt; doubles after each

    def backoff(self, attempt: int) -> timedelta:
        return self.retry_after * 2 ** (attempt - 1)


@dataclass(frozen=True)
class FillReport:
    filled: int = 0  # texts stored
    unheard: int = 0  # attempts that gave no text (or a refusal)
    skipped: int = 0  # deleted, edited by the user, or claimed by another filler meanwhile
    recogniser_down: bool = False


class TranscriptFiller:
    def __init__(
        self,
        database: Database,
        transcriber: SpeechTranscriber,
        limits: Limits,
        clock: Callable[[], datetime],
        policy: TranscriptPolicy | None = None,
    ) -> None:
        self._database = database
        self._transcriber = transcriber
        self._limits = limits
        self._clock = clock
        self._policy = policy or TranscriptPolicy()
        self._wake = asyncio.Event()
        self._down = False  # log an outage once, not every round
        self.rounds = 0  # rounds finished, whatever their outcome (what a test waits on)

    def wake(self) -> None:
        """Run a round now (after an AddSample without text); wakes made during a round start one more."""
        self._wake.set()

    async def fill_now(self, limit: int | None = None) -> FillReport:
        try:
            return await self._fill(limit)
        finally:
            self.rounds += 1

    async def _fill(self, limit: int | None) -> FillReport:
        now = self._clock()
        async with self._database.transaction() as tx:
            due = await tx.samples.needing_transcript(
                now, self._policy.max_attempts, limit or self._policy.batch
            )
        filled = unheard = skipped = 0
        for tenant_id, sample_id, attempts in due:
            outcome = await self._fill_one(tenant_id, sample_id, attempts)
            if outcome == "down":
                return FillReport(filled, unheard, skipped, recogniser_down=True)
            filled += outcome == "filled"
            unheard += outcome == "unheard"
            skipped += outcome == "skipped"
        if self._down:
            self._down = False
            log.info("the speech recogniser answers again; filling transcripts")
        report = FillReport(filled, unheard, skipped)
        if filled or unheard:
            log.info("transcripts", extra={"report": report.__dict__})
        return report

    async def _fill_one(self, tenant_id: str, sample_id: str, attempts: int) -> str:
        attempt = attempts + 1
        async with self._database.transaction() as tx:
            claimed = await tx.samples.claim_transcript(
                tenant_id, sample_id, attempts, self._clock() + self._policy.backoff(attempt)
            )
        if not claimed:
            return "skipped"
        try:
            text = await self._transcriber.transcribe_sample(tenant_id, sample_id)
        except NotFound:
            return "skipped"  # deleted meanwhile
        except (InvalidArgument, FailedPrecondition) as error:
            # The recogniser refuses this audio (too long for it, say): as good as hearing nothing.
            self._log_unheard(tenant_id, sample_id, attempt, error.message)
            return "unheard"
        except asyncio.CancelledError:
            # Shutting down mid-call: the attempt never finished, so it must not count.
            await asyncio.shield(self._release(tenant_id, sample_id, attempts))
            raise
        except DomainError as error:  # Unavailable: the recogniser cannot answer now
            await self._release(tenant_id, sample_id, attempts)
            if not self._down:
                self._down = True
                log.warning(
                    "the speech recogniser is not answering; samples keep waiting for a transcript",
                    extra={"reason": error.message},
                )
            return "down"
        cleaned = self._clean(text)
        if cleaned is None:
            self._log_unheard(tenant_id, sample_id, attempt, "no speech recognised")
            return "unheard"
        async with self._database.transaction() as tx:
            stored = await tx.samples.store_machine_transcript(tenant_id, sample_id, cleaned, self._clock())
        # The profile read cache holds no sample text (only counts and lengths, which do not change), so there
        # is nothing to invalidate.
        return "filled" if stored else "skipped"

    def _clean(self, text: str) -> str | None:
        """The text as a reference text may be: trimmed, and cut to the longest allowed (a recogniser that
        rambles must not fail the whole sample)."""
        text = " ".join(text.split())[: self._limits.max_reference_text_chars]
        try:
            return check_reference_text(text, self._limits)
        except InvalidArgument:
            return None

    async def _release(self, tenant_id: str, sample_id: str, attempts: int) -> None:
        async with self._database.transaction() as tx:
            await tx.samples.release_transcript_claim(tenant_id, sample_id, attempts)

    def _log_unheard(self, tenant_id: str, sample_id: str, attempt: int, reason: str) -> None:
        final = attempt >= self._policy.max_attempts
        log.log(
            logging.WARNING if final else logging.INFO,
            "no transcript for a sample; giving up, it stays usable without one"
            if final
            else "no transcript for a sample; will try again later",
            extra={"tenant": tenant_id, "sample_id": sample_id, "attempt": attempt, "reason": reason},
        )

    async def run_forever(self, interval_seconds: float, outage: OutageCheck | None = None) -> None:
        await repeat(
            self.fill_now,
            interval_seconds,
            what="transcript round",
            logger=log,
            wake=self._wake,
            outage=outage,
        )
