"""Italian for the preference page and its emails (merged into it/LC_MESSAGES/django.po).

Run `python locale/portal_it.py` after `manage.py makemessages -l it`, then
`manage.py compilemessages -l it`. Entries already translated in the .po are left alone.
"""

IT = {
    "Staff": "Personale",
    "No": "No",
    "Date": "Data",
    "Unknown list.": "Lista sconosciuta.",
    "Choose yes, no, or decide later.": "Scegli sì, no oppure decidi più tardi.",
    "Unknown choice.": "Scelta sconosciuta.",
    "Resume processing of my data": "Riprendete il trattamento dei miei dati",
    "Give my consent: %(name)s (text version %(version)s)":
        "Do il mio consenso: %(name)s (versione del testo %(version)s)",
    "Withdraw my consent: %(name)s": "Revoco il mio consenso: %(name)s",
    "Leave the mailing list: %(name)s": "Esco dalla lista: %(name)s",
    "Stop all marketing email to me": "Non inviatemi più email promozionali",
    "Stop processing my data (restriction)": "Smettete di trattare i miei dati (limitazione)",
    "Erase my personal data": "Cancellate i miei dati personali",
    "Give me a copy of my data to download": "Datemi una copia dei miei dati da scaricare",
    "Your choices are already as you set them: nothing to confirm.":
        "Le tue scelte sono già come le hai indicate: non c'è nulla da confermare.",
    "You asked for several changes in the last hour. Please use the latest email we sent "
    "you, or try again later.":
        "Hai chiesto diverse modifiche nell'ultima ora. Usa l'ultima email che ti abbiamo "
        "inviato, oppure riprova più tardi.",
    "This link is not valid.": "Questo link non è valido.",
    "These changes were already confirmed and applied.":
        "Queste modifiche sono già state confermate e applicate.",
    "You sent newer changes after this one, so this link was replaced: use the link in the "
    "latest email.":
        "Dopo questa hai inviato modifiche più recenti, quindi questo link è stato "
        "sostituito: usa il link dell'ultima email.",
    "This confirmation link has expired. Open your preference page and send your choices "
    "again.":
        "Questo link di conferma è scaduto. Apri la pagina delle tue preferenze e invia di "
        "nuovo le tue scelte.",
    "This download link is not valid any more.": "Questo link per il download non è più valido.",
    "Manage your email preferences": "Gestisci le tue preferenze email",
    "Hello %(name)s,": "Ciao %(name)s,",
    "Hello,": "Ciao,",
    "Please confirm the changes to your privacy choices":
        "Conferma le modifiche alle tue scelte sulla privacy",
    "Someone, hopefully you, asked to make these changes on your privacy choices page:":
        "Qualcuno, speriamo tu, ha chiesto queste modifiche nella pagina delle tue scelte "
        "sulla privacy:",
    "Review and confirm": "Controlla e conferma",
    "The link works once and expires in %(hours)s hours. If you did not ask for this, ignore "
    "this message: nothing will change.":
        "Il link funziona una sola volta e scade tra %(hours)s ore. Se non l'hai chiesto tu, "
        "ignora questo messaggio: non cambierà nulla.",
    "To confirm them, open this link and press the button on the page:":
        "Per confermarle, apri questo link e premi il pulsante nella pagina:",
    "Your data": "I tuoi dati",
    "Download everything we hold about you, in the format you prefer:":
        "Scarica tutto ciò che conserviamo su di te, nel formato che preferisci:",
    "Download JSON": "Scarica JSON",
    "Download CSV (spreadsheet)": "Scarica CSV (foglio di calcolo)",
    "The downloads stay available for a limited time. Keep the files somewhere safe: they "
    "contain your personal data.":
        "I download restano disponibili per un tempo limitato. Conserva i file in un luogo "
        "sicuro: contengono i tuoi dati personali.",
    "Language": "Lingua",
    "Your privacy choices": "Le tue scelte sulla privacy",
    "This page is private to you: please do not share its address.":
        "Questa pagina è riservata a te: non condividerne l'indirizzo.",
    "Confirm your changes": "Conferma le tue modifiche",
    "You asked us to make these changes:": "Ci hai chiesto di fare queste modifiche:",
    "Confirm these changes": "Conferma queste modifiche",
    "If you did not ask for this, close this page: nothing changes.":
        "Se non l'hai chiesto tu, chiudi questa pagina: non cambia nulla.",
    "Already applied": "Già applicate",
    "Link not valid": "Link non valido",
    "These changes are already applied": "Queste modifiche sono già applicate",
    "This link was replaced": "Questo link è stato sostituito",
    "This link has expired": "Questo link è scaduto",
    "Nothing was changed.": "Non è stato modificato nulla.",
    "Your changes are saved": "Le tue modifiche sono salvate",
    "Thank you: your changes are saved": "Grazie: le tue modifiche sono salvate",
    "We did not record your consent to: %(names)s. Its text changed after you read it; please "
    "read the new text on your page and answer again.":
        "Non abbiamo registrato il tuo consenso a: %(names)s. Il testo è cambiato dopo che "
        "l'hai letto; leggi il nuovo testo nella tua pagina e rispondi di nuovo.",
    "Every email we send you has a link to your choices.":
        "Ogni email che ti inviamo contiene un link alle tue scelte.",
    "Please try again": "Riprova",
    "Your browser did not send back the security check of this form, so nothing was changed. "
    "Allow cookies for this site, reload the page and send the form again.":
        "Il tuo browser non ha restituito il controllo di sicurezza di questo modulo, quindi "
        "non è stato modificato nulla. Consenti i cookie per questo sito, ricarica la pagina "
        "e invia di nuovo il modulo.",
    "Confirm your subscription": "Conferma la tua iscrizione",
    "Press the button to confirm that you want to receive our emails. You can change your "
    "mind at any time from the link at the bottom of every email.":
        "Premi il pulsante per confermare che vuoi ricevere le nostre email. Puoi cambiare "
        "idea in qualsiasi momento dal link in fondo a ogni email.",
    "Yes, send me emails": "Sì, inviatemi le email",
    "Thank you": "Grazie",
    "Thank you, you are confirmed": "Grazie, la tua iscrizione è confermata",
    "We recorded your confirmation. Every email we send has a link to change your choices.":
        "Abbiamo registrato la tua conferma. Ogni email che inviamo contiene un link per "
        "cambiare le tue scelte.",
    "Your data was erased": "I tuoi dati sono stati cancellati",
    "We erased your personal data as you asked. We keep only what the law requires, such as "
    "a record that you must not receive our emails.":
        "Abbiamo cancellato i tuoi dati personali come hai chiesto. Conserviamo solo ciò che "
        "la legge richiede, ad esempio la registrazione che non devi ricevere le nostre email.",
    "This link is not valid any more": "Questo link non è più valido",
    "It may have been used already or have expired.":
        "Potrebbe essere già stato usato o essere scaduto.",
    "These are the choices we hold for <strong>%(address)s</strong>. Change what you like and "
    "press the button at the end: we then email you a link, and nothing changes until you "
    "follow it.":
        "Queste sono le scelte che abbiamo registrato per <strong>%(address)s</strong>. "
        "Modifica ciò che vuoi e premi il pulsante in fondo: ti invieremo un link via email, "
        "e nulla cambia finché non lo apri.",
    "Some choices could not be read. Please check them and send the form again.":
        "Non è stato possibile leggere alcune scelte. Controllale e invia di nuovo il modulo.",
    "Waiting for your confirmation": "In attesa della tua conferma",
    "On %(sent)s we emailed a confirmation link, valid until %(until)s, to %(address)s. "
    "Nothing below has changed yet:":
        "Il %(sent)s abbiamo inviato a %(address)s un link di conferma, valido fino al "
        "%(until)s. Per ora non è cambiato nulla:",
    "If you send the form again, the new choices replace these and the earlier link stops "
    "working.":
        "Se invii di nuovo il modulo, le nuove scelte sostituiscono queste e il link "
        "precedente smette di funzionare.",
    "Email subscriptions": "Iscrizioni email",
    "Mailing lists you are on": "Le liste a cui sei iscritto",
    "Untick a list to leave it.": "Togli la spunta a una lista per uscirne.",
    "You are not on any of our mailing lists.": "Non sei iscritto a nessuna delle nostre liste.",
    "Unsubscribed": "Disiscritto",
    "We do not send you marketing email. Messages about your own requests, like the "
    "confirmation of a change here, still reach you.":
        "Non ti inviamo email promozionali. I messaggi sulle tue richieste, come la conferma "
        "di una modifica fatta qui, ti arrivano comunque.",
    "Want our emails again? Sign up once more through one of our sign-up forms: only you can "
    "reopen them.":
        "Vuoi di nuovo le nostre email? Iscriviti ancora tramite uno dei nostri moduli di "
        "iscrizione: solo tu puoi riattivarle.",
    "All marketing email": "Tutte le email promozionali",
    "Unsubscribe me from all marketing email": "Disiscrivimi da tutte le email promozionali",
    "Only you can undo this, by signing up again through one of our forms.":
        "Solo tu puoi annullarlo, iscrivendoti di nuovo tramite uno dei nostri moduli.",
    "How we use your data": "Come usiamo i tuoi dati",
    "Version %(version)s, in effect since %(date)s": "Versione %(version)s, in vigore dal %(date)s",
    "Our data-use statement has not been published yet.":
        "La nostra informativa sull'uso dei dati non è ancora stata pubblicata.",
    "Your consents": "I tuoi consensi",
    "Each consent is your own choice, and you can change it at any time.":
        "Ogni consenso è una tua scelta e puoi cambiarlo in qualsiasi momento.",
    "Text version %(version)s.": "Versione del testo %(version)s.",
    "You agreed": "Hai acconsentito",
    "to an earlier version of this text": "a una versione precedente di questo testo",
    "You said no": "Hai detto no",
    "Not answered yet": "Nessuna risposta",
    "Yes, I agree": "Sì, acconsento",
    "Decide later": "Decido più tardi",
    "“Yes” is only our suggestion: we record your consent only if you also tick it on the "
    "confirmation page.":
        "«Sì» è solo un nostro suggerimento: registriamo il tuo consenso solo se lo spunti "
        "anche nella pagina di conferma.",
    "Your rights": "I tuoi diritti",
    "Stop processing my data": "Smettete di trattare i miei dati",
    "Processing stopped": "Trattamento sospeso",
    "since %(date)s. We keep your data but do not use it, and send you only messages about "
    "your requests.":
        "dal %(date)s. Conserviamo i tuoi dati ma non li usiamo, e ti inviamo solo messaggi "
        "sulle tue richieste.",
    "We keep your data but stop using it: no changes, no campaigns, no emails except about "
    "your requests. You can resume it here.":
        "Conserviamo i tuoi dati ma smettiamo di usarli: nessuna modifica, nessuna campagna, "
        "nessuna email tranne quelle sulle tue richieste. Puoi riattivarlo qui.",
    "Erase my data": "Cancella i miei dati",
    "You asked us to erase your data on %(date)s. We will do it within one month of your "
    "request.":
        "Ci hai chiesto di cancellare i tuoi dati il %(date)s. Lo faremo entro un mese dalla "
        "tua richiesta.",
    "We delete your personal data within one month. We keep only what the law requires, for "
    "example the record that you asked us not to email you.":
        "Cancelliamo i tuoi dati personali entro un mese. Conserviamo solo ciò che la legge "
        "richiede, ad esempio la registrazione che ci hai chiesto di non scriverti.",
    "Save my choices": "Salva le mie scelte",
    "We will email a confirmation link to %(address)s. Your choices change only when you "
    "follow it, so no one else can change them with a forwarded email.":
        "Invieremo un link di conferma a %(address)s. Le tue scelte cambiano solo quando lo "
        "apri, così nessun altro può modificarle con un'email inoltrata.",
    "Download my data": "Scarica i miei dati",
    "Get a copy of everything we hold about you, including your consent history, as JSON and "
    "CSV files.":
        "Ricevi una copia di tutto ciò che conserviamo su di te, compresa la storia dei tuoi "
        "consensi, in file JSON e CSV.",
    "Email me a download link": "Inviami un link per scaricarli",
    "Who saw or received your data": "Chi ha visto o ricevuto i tuoi dati",
    "When our staff viewed your sensitive data":
        "Quando il nostro personale ha visto i tuoi dati sensibili",
    "Data": "Dato",
    "Role": "Ruolo",
    "None: no one has viewed your sensitive data.":
        "Nessuno: nessuno ha visto i tuoi dati sensibili.",
    "Partners who received your data": "Partner che hanno ricevuto i tuoi dati",
    "since %(date)s": "dal %(date)s",
    "None: we have not passed your data to any partner.":
        "Nessuno: non abbiamo passato i tuoi dati a nessun partner.",
    "Check your inbox": "Controlla la tua casella email",
    "We emailed a confirmation link to <strong>%(address)s</strong>. Nothing has changed yet: "
    "your choices are saved only when you follow that link.":
        "Abbiamo inviato un link di conferma a <strong>%(address)s</strong>. Per ora non è "
        "cambiato nulla: le tue scelte vengono salvate solo quando apri quel link.",
    "What will change": "Cosa cambierà",
    "The link works once, until %(until)s: if the email does not arrive, look in your spam "
    "folder.":
        "Il link funziona una sola volta, fino al %(until)s: se l'email non arriva, controlla "
        "la cartella dello spam.",
    "Back to my choices": "Torna alle mie scelte",
    "Unsubscribe": "Disiscriviti",
    "Stop our emails?": "Vuoi smettere di ricevere le nostre email?",
    "Press the button and we will stop sending you marketing email at once. Messages about "
    "your own requests (for example a confirmation you ask for) may still reach you.":
        "Premi il pulsante e smetteremo subito di inviarti email promozionali. I messaggi "
        "sulle tue richieste (ad esempio una conferma che chiedi) potrebbero arrivarti "
        "comunque.",
    "Unsubscribe me": "Disiscrivimi",
    "Our suggestion, for you to accept or not when you confirm: give my consent to %(name)s":
        "Un nostro suggerimento, che puoi accettare o no quando confermi: do il mio consenso "
        "a %(name)s",
    "Our suggestions": "I nostri suggerimenti",
    "You left these as we suggested. We record your consent only if you tick it here.":
        "Li hai lasciati come li abbiamo suggeriti. Registriamo il tuo consenso solo se lo "
        "spunti qui.",
    "Yes, I agree: %(name)s": "Sì, acconsento: %(name)s",
    "Stop processing": "Sospensione del trattamento",
    "Erasure": "Cancellazione",
    "You are unsubscribed": "Sei disiscritto",
    "We will not send you marketing email any more. Only you can change this, by signing up "
    "again.":
        "Non ti invieremo più email promozionali. Solo tu puoi cambiarlo, iscrivendoti di "
        "nuovo.",
}


def _unquote(lines):
    import ast

    return "".join(ast.literal_eval(line) for line in lines)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def merge(path):
    """Fill in the msgstr of every entry whose msgid is ours, when it is empty or fuzzy."""
    import re

    blocks = path.read_text(encoding="utf-8").split("\n\n")
    out = []
    for index, block in enumerate(blocks):
        if index == 0:  # the header: not fuzzy, Italian plural rule
            block = block.replace("#, fuzzy\n", "").replace(
                '"Language: \\n"', '"Language: it\\n"').replace(
                '"Plural-Forms: nplurals=INTEGER; plural=EXPRESSION;\\n"',
                '"Plural-Forms: nplurals=2; plural=(n != 1);\\n"')
            out.append(block)
            continue
        match = re.search(r'^msgid ((?:".*"\n)+)msgstr ((?:".*"\n?)+)', block + "\n", re.M)
        if not match or "msgid_plural" in block:
            out.append(block)
            continue
        msgid = _unquote(match[1].strip().split("\n"))
        fuzzy = re.search(r"^#,.*\bfuzzy\b", block, re.M)
        if msgid in IT and (fuzzy or not _unquote(match[2].strip().split("\n"))):
            head = block[:match.start()]
            head = re.sub(r"^#\| .*\n", "", head, flags=re.M)
            head = re.sub(r"^#, fuzzy, ", "#, ", head, flags=re.M)
            head = re.sub(r"^#, fuzzy\n", "", head, flags=re.M)
            block = head + "msgid " + match[1] + "msgstr " + _quote(IT[msgid])
        out.append(block)
    path.write_text("\n\n".join(out), encoding="utf-8")


if __name__ == "__main__":
    from pathlib import Path

    merge(Path(__file__).resolve().parent / "it" / "LC_MESSAGES" / "django.po")
