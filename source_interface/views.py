"""The source interface's pages: landing, codename, report, receipt, sign-in and thread."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import (
    Flask,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from nacl.public import PrivateKey
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

from crypto import codenames
from crypto.keys import KeyChain, XWingSecretKey
from dropbox import offices, reports
from dropbox.config import Config
from dropbox.errors import DropboxError, NotFound
from dropbox.instance import Instance
from dropbox.items import new_id
from dropbox.models import ItemKind, Report, Status
from dropbox.web.limits import DerivationGate
from source_interface import formats

if TYPE_CHECKING:  # uploads.py imports this module
    from source_interface.uploads import Upload

LANGUAGE_NAMES = {"en": "English", "fr": "Français", "es": "Español"}
# Far more than a codename's words from the lists ever take: longer input is not one,
# and is refused before even normalising it.
MAX_CODENAME_CHARS = 500
# Where the session keeps the codename it shows until it is confirmed (sealed with the
# session's state: see dropbox/sessions.py), and the language it was drawn in.
SHOWN_CODENAME = "shown_codename"
MAX_MESSAGE_CHARS = 100_000
MAX_DETAIL_CHARS = 5_000
DETAIL_FIELDS = {
    "what_when": _l("When it happened"),
    "where": _l("Where it happened"),
    "who": _l("Who was involved"),
    "reported_before": _l("Reported before"),
    "evidence": _l("Evidence or witnesses"),
    "protected_activity": _l("Protected activity (what was reported or how they helped)"),
    "protected_activity_date": _l("Date of the protected activity"),
    "detrimental_action": _l("What was done or threatened against them"),
}
IDENTITY_FIELDS = {"identity_name": _l("Name"), "identity_contact": _l("Contact details")}
# The questions shown only under a retaliation category.
RETALIATION_FIELDS = ("protected_activity", "protected_activity_date", "detrimental_action")

ERRORS: dict[str, tuple[Any, Any]] = {
    "bad_request": (
        _l("Something was wrong with that request"),
        _l("The page could not use what was sent. Please go back and try again."),
    ),
    "not_found": (
        _l("This page does not exist"),
        _l("The address may be mistyped, or the page may have moved."),
    ),
    "too_large": (
        _l("The files are too large"),
        _l(
            "Everything sent at once must be smaller than %(mib)s MB. Nothing was kept. "
            "Please send fewer or smaller files, or send them in several answers."
        ),
    ),
    "too_many": (
        _l("Please slow down"),
        _l("There were too many attempts in a short time. Wait a minute, then try again."),
    ),
    "busy": (
        _l("The site is busy"),
        _l("Many people are using this site right now. Wait a minute, then try again."),
    ),
    "form_expired": (
        _l("This form has expired"),
        _l(
            "For your safety, forms stop working when your session ends or after you log "
            "out. Nothing was sent. Please start again."
        ),
    ),
    "session_ended": (
        _l("Your session has ended"),
        _l(
            "For your safety, a session ends after %(minutes)s minutes or when you log out. "
            "Sign in again with your codename to continue."
        ),
    ),
    "unavailable": (
        _l("The site cannot take reports right now"),
        _l(
            "Nothing was sent, and nothing you wrote was kept. The site's administrators "
            "need to check it first. Please try again later."
        ),
    ),
    "server_error": (
        _l("Something went wrong on our side"),
        _l(
            "Your request could not be completed. Nothing you sent was kept from this "
            "attempt. Please try again in a few minutes."
        ),
    ),
}

STATUS_TEXT: dict[str, tuple[Any, Any]] = {
    Status.RECEIVED: (
        _l("Received"),
        _l("Your report has arrived safely. The office has not confirmed it personally yet."),
    ),
    Status.ACKNOWLEDGED: (
        _l("Acknowledged"),
        _l("An officer has confirmed receiving your report."),
    ),
    Status.UNDER_ASSESSMENT: (
        _l("Being assessed"),
        _l("The office is studying what you reported to decide what to do next."),
    ),
    Status.REFERRED: (
        _l("Referred"),
        _l("Your report has been passed on: to the other office, or for investigation."),
    ),
    Status.CLOSED: (_l("Closed"), _l("The office has finished its work on this report.")),
    Status.REOPENED: (_l("Reopened"), _l("The office is looking at this report again.")),
}


def error_page(kind: str, status: int) -> tuple[str, int]:
    """A calm error page; the actions offer a way on."""
    title, message = ERRORS[kind]
    config: Config = current_app.extensions["dropbox"].config
    text = str(message) % {
        "mib": config.source.max_upload_mib,
        "minutes": config.source.session_minutes,
    }
    actions = []
    if kind in ("session_ended", "form_expired"):
        actions.append((url_for("login"), _("Sign in with your codename")))
    return render_template(
        "error.html", title=title, message=text, status=status, actions=actions
    ), status


def _refused_key(mismatch: offices.KeyMismatch) -> tuple[str, int]:
    """The page for an office key that failed its check: nothing was sealed; logged for admins."""
    current_app.logger.error("refused to seal in %s: %s", request.endpoint, mismatch.detail)
    return error_page("unavailable", 503)


def _instance() -> Instance:
    instance: Instance = current_app.extensions["dropbox"]
    return instance


def _derive(codename: str) -> codenames.SourceSecrets:
    gate: DerivationGate = current_app.extensions["dropbox.gate"]
    secrets = _instance().secrets
    with gate.slot():
        return codenames.derive(codename, secrets.codename_salt, secrets.codename_cost)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def well_formed(codename: str) -> bool:
    """Known words, as many as a codename has: the free check that decides whether it may cost."""
    return len(codename) <= MAX_CODENAME_CHARS and codenames.looks_like_codename(codename)


def shown_codename() -> tuple[str, str] | None:
    """The codename this session is showing until it is confirmed, and its language."""
    shown = session.get(SHOWN_CODENAME)
    if not isinstance(shown, dict):
        return None
    codename, language = shown.get("codename"), shown.get("language")
    if not isinstance(codename, str) or not isinstance(language, str):
        return None
    return codename, language


def show_new_codename(language: str) -> str:
    """Draw a codename for this session to show until it is confirmed, replacing any other.

    It is kept only in the session's state, which the store holds sealed
    under a key that only the source's cookie carries. A confirmation still
    pending for an earlier codename ends: the report can only go out under
    the codename on the source's screen.
    """
    codename = codenames.generate(language)
    session[SHOWN_CODENAME] = {"codename": codename, "language": language}
    for key in ("pending_lookup_id", "new_report_id"):
        session.pop(key, None)
    if not session.get("report_id"):
        for key in SOURCE_KEYS:
            session.pop(key, None)
    return codename


def is_shown_codename(codename: str) -> bool:
    """True only for the codename this session is showing, however it is typed."""
    shown = shown_codename()
    if shown is None or len(codename) > MAX_CODENAME_CHARS:
        return False
    typed = codenames.normalise(codename).encode("utf-8")
    return hmac.compare_digest(typed, codenames.normalise(shown[0]).encode("utf-8"))


def unknown_words(codename: str) -> list[str]:
    """The typed words (normalised, once each, in order) that are in none of the word lists.

    Known means known to sign-in: any word of any language's full list
    (`codenames.is_known_word`), the same words the free check accepts.
    """
    words = codenames.normalise(codename).split(" ")
    return [w for w in dict.fromkeys(words) if w and not codenames.is_known_word(w)]


# The session fields that hold the key pairs derived from the codename: the
# X25519 secret key and the X-Wing seed. Only in the sealed session state.
SOURCE_KEYS = ("secret_key", "hybrid_key")


def _keep_source_keys(derived: codenames.SourceSecrets) -> None:
    """Keep both key pairs in the sealed session state: which a report uses is decided per use."""
    session["secret_key"] = _b64(bytes(derived.secret_key))
    session["hybrid_key"] = _b64(bytes(derived.hybrid_key))


def _source_keys() -> KeyChain:
    """The key pairs this session derived from the codename, the hybrid one first.

    A session that began before sources got hybrid keys holds the X25519
    key alone: its report (if it is still to be sent) is made with it.
    """
    classical = PrivateKey(_unb64(session["secret_key"]))
    hybrid = session.get("hybrid_key")
    if not isinstance(hybrid, str):
        return KeyChain((classical,))
    return KeyChain((XWingSecretKey(_unb64(hybrid)), classical))


def _signed_in_report(db: Any) -> tuple[Report, KeyChain] | None:
    """The signed-in source's report, and their keys for it: the report's own key first."""
    report_id = session.get("report_id")
    if not report_id:
        return None
    report = db.get(Report, report_id)
    if report is None:
        session.clear()
        return None
    return report, codenames.report_keys(_source_keys(), report.source_public_key)


def _session_ended() -> tuple[str, int]:
    return error_page("session_ended", 401)


def register_views(app: Flask, config: Config) -> None:
    """Attach every page of the source interface."""
    limiter = app.extensions["dropbox.limiter"]
    per_session_attempts = f"{config.limits.codename_attempts_per_minute}/minute"
    per_session_submissions = f"{config.limits.submissions_per_hour}/hour"

    def limited(value: str) -> Callable[[Any], Any]:
        return limiter.limit(value, methods=["POST"])  # type: ignore[no-any-return]

    def costly_attempts(costs: Callable[[str], bool]) -> Callable[[Any], Any]:
        # Per session, and only for an attempt that will cost a derivation: one that
        # fails the free checks costs nothing, so it counts against nothing. There is
        # no limit shared by every visitor: fresh cookies cost nothing, so such a
        # limit would be a budget that anyone can spend for everyone. What bounds the
        # work a flood makes is the derivation gate (dropbox/web/limits.py), in turn.
        return limiter.limit(  # type: ignore[no-any-return]
            per_session_attempts,
            methods=["POST"],
            exempt_when=lambda: not costs(request.form.get("codename", "")),
        )

    def not_shown() -> Response:
        # The one answer to any codename other than the one shown to this session,
        # whether made up, mistyped, from an older page or already used.
        flash(
            _(
                "The codename on that page can no longer be used. "
                "Here is a new one: please write it down."
            ),
            "error",
        )
        return redirect(url_for("generate"))

    @app.get("/")
    def index() -> str:
        """The landing page: what this is, and the two ways on."""
        return render_template("index.html", offices=config.offices, categories=config.categories)

    @app.get("/language/<code>")
    def set_language(code: str) -> Response:
        """Switch the language (and with it the codename word list)."""
        if code in config.source.languages:
            session["language"] = code
        target = request.args.get("next", "index")
        if target not in {"index", "generate", "login", "report_form", "thread", "receipt"}:
            target = "index"
        return redirect(url_for(target))

    def _codename_page(codename: str, language: str, error: str | None) -> str:
        return render_template(
            "generate.html",
            codename=codename,
            words=codename.split(" "),
            language=language,
            error=error,
        )

    @app.get("/codename")
    def generate() -> str:
        """Show this session's codename: the same one on reload or Back, until it is confirmed.

        A codename in another language than the page's (the source switched
        language) is replaced by one in the page's language, as the page says.
        Nothing is stored outside the sealed session until the first report.
        """
        language = current_app.extensions["dropbox.locale"]()
        shown = shown_codename()
        if shown is not None and shown[1] == language:
            codename = shown[0]
        else:
            codename = show_new_codename(language)
        return _codename_page(codename, language, None)

    @app.post("/codename/new")
    def different_codename() -> Response:
        """The source asked for a different codename: the one shown before can no longer be used."""
        show_new_codename(current_app.extensions["dropbox.locale"]())
        flash(_("Here is a different codename. The one shown before will not be used."), "info")
        return redirect(url_for("generate"))

    @app.post("/codename")
    @costly_attempts(is_shown_codename)
    def confirm_codename() -> Response | tuple[str, int]:
        """The source has written the codename down: derive its keys, go on to the report."""
        shown = shown_codename()
        if shown is None or not is_shown_codename(request.form.get("codename", "")):
            return not_shown()
        codename, language = shown
        if request.form.get("written_down") != "yes":
            return _codename_page(
                codename,
                language,
                _("Please write your codename down, then tick the box to confirm."),
            ), 400
        derived = _derive(codename)
        with _instance().readers() as db:
            if reports.find(db, derived.lookup_id) is not None:
                # Only if this session already sent a report with it (the page was
                # kept open, or came back): one codename, one report.
                session.pop(SHOWN_CODENAME, None)
                return not_shown()
        session.regenerate()  # type: ignore[attr-defined]
        for key in ("report_id", "pending_lookup_id"):
            session.pop(key, None)
        # The codename stays in the sealed session until the report is sent, so that
        # Back from the report form shows the same one.
        session["pending_lookup_id"] = _b64(derived.lookup_id)
        _keep_source_keys(derived)
        session["new_report_id"] = new_id()
        return redirect(url_for("report_form"))

    def _render_form(
        values: dict[str, str], errors: dict[str, str], status: int = 200, files_lost: bool = False
    ) -> tuple[str, int]:
        return render_template(
            "report.html",
            categories=config.categories,
            values=values,
            errors=errors,
            max_upload_mib=config.source.max_upload_mib,
            min_message_chars=config.source.min_message_chars,
            files_lost=files_lost,
        ), status

    @app.get("/report")
    def report_form() -> Response | tuple[str, int]:
        """The report form (after a codename was confirmed)."""
        if session.get("report_id"):
            return redirect(url_for("thread"))
        if not session.get("pending_lookup_id"):
            if getattr(session, "expired", False):
                return _session_ended()
            return redirect(url_for("generate"))
        return _render_form({}, {})

    def _check_report_form(form: Any) -> tuple[dict[str, str], dict[str, str]]:
        fields = ("category", "message", *DETAIL_FIELDS, *IDENTITY_FIELDS)
        values = {name: form.get(name, "").strip() for name in fields}
        values["safety_risk"] = "yes" if form.get("safety_risk") == "yes" else ""
        errors: dict[str, str] = {}
        codes = {c.code for c in config.categories}
        if values["category"] not in codes:
            errors["category"] = _(
                "Please choose what it is about. If you are not sure, choose “I am not sure”."
            )
        minimum = config.source.min_message_chars
        if len(values["message"]) < minimum:
            errors["message"] = _(
                "Please describe what happened in at least %(n)s characters.", n=minimum
            )
        elif len(values["message"]) > MAX_MESSAGE_CHARS:
            errors["message"] = _(
                "The description is too long (at most %(n)s characters). Put the rest in a file.",
                n=MAX_MESSAGE_CHARS,
            )
        for name in (*DETAIL_FIELDS, *IDENTITY_FIELDS):
            if len(values[name]) > MAX_DETAIL_CHARS:
                errors[name] = _("This is too long (at most %(n)s characters).", n=MAX_DETAIL_CHARS)
        retaliation = {c.code for c in config.categories if c.retaliation}
        answered = [n for n in RETALIATION_FIELDS if values[n]]
        if values["category"] in codes and values["category"] not in retaliation and answered:
            # Answers typed under the retaliation choice, then another category chosen:
            # the questions are hidden now, and the report would go to another office.
            # Neither send them unseen nor drop them: the source decides.
            errors.setdefault(
                answered[0],
                _(
                    "You answered questions about retaliation, then chose another subject. "
                    "If you were punished or threatened for reporting, choose “%(label)s”; "
                    "otherwise, empty these answers.",
                    label=config.category(sorted(retaliation)[0])
                    .localized(current_app.extensions["dropbox.locale"]())
                    .label,
                ),
            )
        if form.get("website"):
            errors["website"] = _("Please leave the last field empty.")
        return values, errors

    @app.post("/report")
    @limited(per_session_submissions)
    def submit_report() -> Response | tuple[str, int]:
        """Receive a first report: text, details, identity and files, encrypted on arrival."""
        if session.get("report_id"):
            return redirect(url_for("thread"))
        if not session.get("pending_lookup_id"):
            return _session_ended()
        values, errors = _check_report_form(request.form)
        upload: Upload = g.upload
        if errors:
            return _render_form(values, errors, 400, files_lost=bool(upload.complete_files()))
        category = config.category(values["category"])
        urgent = values["safety_risk"] == "yes"
        details = {str(label): values[name] for name, label in DETAIL_FIELDS.items()}
        if urgent:
            details[_("Safety")] = _("The source says their safety is at immediate risk.")
        office = config.office(category.office)
        lookup_id = _unb64(session["pending_lookup_id"])
        new = reports.NewReport(
            lookup_id=lookup_id,
            # A new report is made with the hybrid key (X-Wing) derived from the codename.
            source_public_key=_source_keys().public_key,
            category=category.code,
            text=values["message"],
            details=details,
            identity={str(label): values[name] for name, label in IDENTITY_FIELDS.items()},
            urgent=urgent,
            acknowledgement=_(
                "Thank you. The %(office)s has received your report. An officer will confirm "
                "it personally within %(days)s days and may ask you questions here. Please "
                "come back with your codename to read them.",
                office=office.localized(current_app.extensions["dropbox.locale"]()).name,
                days=reports.ACKNOWLEDGE_DAYS,
            ),
        )
        with _instance().readers() as db:
            sent = reports.find(db, lookup_id)
        if sent is None:
            try:
                with _instance().sessions.begin() as db:
                    report_id = reports.submit(
                        _instance(), db, session["new_report_id"], new, upload
                    ).id
            except IntegrityError:
                # The same form sent twice at once: the other request stored it first.
                with _instance().readers() as db:
                    sent = reports.find(db, lookup_id)
                if sent is None:
                    return error_page("server_error", 500)
            except offices.KeyMismatch as mismatch:
                return _refused_key(mismatch)
            except DropboxError:
                return error_page("server_error", 500)
        if sent is not None:
            if sent.id != session["new_report_id"]:
                for key in ("pending_lookup_id", "new_report_id", *SOURCE_KEYS, SHOWN_CODENAME):
                    session.pop(key, None)
                return not_shown()
            report_id = sent.id  # this session's own report, sent a moment ago
        for key in ("pending_lookup_id", "new_report_id", SHOWN_CODENAME):
            session.pop(key, None)
        session["report_id"] = report_id
        session["urgent"] = urgent
        return redirect(url_for("receipt"))

    @app.get("/receipt")
    def receipt() -> Response | tuple[str, int] | str:
        """What happens next, after a first report."""
        with _instance().readers() as db:
            found = _signed_in_report(db)
            if found is None:
                return _session_ended()
            report = found[0]
            return render_template(
                "receipt.html",
                office=config.office(report.office_code),
                acknowledge_days=reports.ACKNOWLEDGE_DAYS,
                feedback_months=reports.FEEDBACK_MONTHS,
                urgent=report.urgent,
            )

    @app.route("/login", methods=["GET", "POST"])
    @costly_attempts(well_formed)
    def login() -> Response | tuple[str, int] | str:
        """Sign in with a codename."""
        if request.method == "GET":
            return render_template("login.html", error=None, value="")
        codename = request.form.get("codename", "")
        # What was typed stays in the box (the page is never cached: Cache-Control
        # no-store on every page); what the page says depends on the words typed
        # and the lists only, never on which codenames have a report.
        if not well_formed(codename):
            error = _(
                "That is not a codename. A codename is the %(count)s words this site gave you "
                "(%(legacy)s for older codenames). Check each word and try again.",
                count=codenames.WORD_COUNT,
                legacy=codenames.LEGACY_WORD_COUNT,
            )
            # What is wrong with this codename first, then what a codename is.
            problem = ""
            if len(codename) <= MAX_CODENAME_CHARS:
                unknown = unknown_words(codename)
                typed = len([w for w in codenames.normalise(codename).split(" ") if w])
                if unknown:
                    problem = ngettext(
                        "This word is not in any of our word lists: %(words)s.",
                        "These words are not in any of our word lists: %(words)s.",
                        len(unknown),
                        words=", ".join(unknown),
                    )
                elif typed:
                    problem = ngettext("You typed %(num)d word.", "You typed %(num)d words.", typed)
            if problem:
                error = f"{problem} {error}"
            return render_template("login.html", error=error, value=codename), 400
        derived = _derive(codename)
        with _instance().readers() as db:
            report = reports.find(db, derived.lookup_id)
        if report is None:
            error = _(
                "No report matches this codename. Check each word and try again. If you "
                "never sent a report with it, make a new report."
            )
            return render_template("login.html", error=error, value=codename), 400
        session.regenerate()  # type: ignore[attr-defined]
        session.clear()
        session["report_id"] = report.id
        # Both key pairs, whichever the report uses: the same work and the same
        # session for a hybrid report and for one made before (docs/security.md, 6a).
        _keep_source_keys(derived)
        session["language"] = current_app.extensions["dropbox.locale"]()
        return redirect(url_for("thread"))

    @app.get("/thread")
    def thread() -> tuple[str, int] | str:
        """The source's thread: what is new from the office first, then everything in order."""
        with _instance().readers() as db:
            found = _signed_in_report(db)
            if found is None:
                return _session_ended()
            report, source_keys = found
            raw = reports.thread_for_source(_instance(), db, report, source_keys)
        status, explanation = STATUS_TEXT.get(report.status, STATUS_TEXT[Status.RECEIVED])
        entries = [
            {
                "id": e.id,
                "kind": str(e.kind),
                "from_source": e.from_source,
                "date": formats.date_text(e.created_at),
                "size_text": formats.size_text(e.size),
                "text": e.text,
                "damaged": e.damaged,
                "new": e.new,
            }
            for e in raw
        ]
        page = render_template(
            "thread.html",
            office=config.office(report.office_code),
            status_text=status,
            status_explanation=explanation,
            new_entries=[e for e in entries if e["new"]],
            entries=[e for e in entries if not e["new"]],
            max_upload_mib=config.source.max_upload_mib,
        )
        # Shown now, so new no more. Only once the page is built, and only for a GET:
        # a HEAD shows nobody anything.
        shown = [e.id for e in raw if e.new]
        if shown and request.method == "GET":
            with _instance().sessions.begin() as db:
                reports.mark_seen_by_source(db, report, shown)
        return page

    @app.post("/thread/answer")
    @limited(per_session_submissions)
    def answer() -> Response | tuple[str, int]:
        """A returning source answers: text, files, or both."""
        text = request.form.get("message", "").strip()
        upload: Upload = g.upload
        with _instance().sessions.begin() as db:
            found = _signed_in_report(db)
            if found is None:
                return _session_ended()
            if len(text) > MAX_MESSAGE_CHARS:
                flash(_("Your answer is too long. Put the rest in a file."), "error")
                return redirect(url_for("thread"))
            report, source_keys = found
            # The key derived from the codename, never the row's, is what the answer binds:
            # the report's own key (`codenames.report_keys`).
            try:
                items = reports.add_answer(
                    _instance(), db, report, text, upload, source_key=source_keys.public_key
                )
            except offices.KeyMismatch as mismatch:
                db.rollback()
                return _refused_key(mismatch)
        if not items:
            flash(_("Write an answer or choose a file before sending."), "error")
        else:
            files = sum(1 for i in items if i.kind == ItemKind.FILE)
            if files == len(items):
                sent = ngettext(
                    "Sent. Your file is encrypted for the office.",
                    "Sent. Your %(num)d files are encrypted for the office.",
                    files,
                )
            elif files:
                sent = ngettext(
                    "Sent. Your message and %(num)d file are encrypted for the office.",
                    "Sent. Your message and %(num)d files are encrypted for the office.",
                    files,
                )
            else:
                sent = _("Sent. Your message is encrypted for the office.")
            flash(sent, "info")
        return redirect(url_for("thread"))

    @app.post("/thread/messages/<item_id>/delete")
    def delete_message(item_id: str) -> Response | tuple[str, int]:
        """Delete an office message from the source's view once read."""
        with _instance().sessions.begin() as db:
            found = _signed_in_report(db)
            if found is None:
                return _session_ended()
            try:
                reports.delete_for_source(
                    db, found[0], item_id, [key.public_key for key in found[1].keys]
                )
            except NotFound:
                return error_page("not_found", 404)
        flash(_("The message was deleted. You can no longer read it here."), "info")
        return redirect(url_for("thread"))

    @app.post("/logout")
    def logout() -> str:
        """End the session now."""
        session.clear()
        return render_template("logged_out.html")
