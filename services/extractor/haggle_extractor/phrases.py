"""The phrase patterns the offline extractor reads a negotiation with: what sounds like a yes, a no, a
refusal of the job, a "let me check", a price that belongs to something else, a condition on the price.

Why a module of its own: these lists are most of the extractor's text and nearly all of its tuning (they
grow with every transcript the eval gets wrong), while the negotiation logic that uses them (offline.py)
changes rarely. Kept apart, a change to a phrase list reads as just that, and the logic stays short enough
to follow. Every pattern is matched as offline.py says; see there for what a match means in context.
"""

import re

# ---------------------------------------------------------------------------------------------------------
# Speech acts. Each pattern is checked per sentence; a question is never an acceptance.

ACCEPT_STRONG = re.compile(
    r"""\b(
      (it'?s|that'?s|that\ is|it\ is|we\ have|we'?ve\ got|you\ have|you'?ve\ got|you\ got|we\ got|
        call\ it|make\ it|sounds\ like|that\ would\ be|that'?d\ be|you\ have\ yourself|you'?ve\ got\ yourself)
        \ (yourself\ |ourselves\ |a\ |an\ |ourself\ )?(a\ )?deal\b
    | ^deal\b | ^it'?s\ a\ deal
    | sounds?\ (good|great|fair|perfect|fine|reasonable|ok(ay)?|alright|awesome|excellent|wonderful|like\ a\ plan|
        about\ right|doable|acceptable|amazing|nice|lovely|like\ a\ good\ deal)
    | (that|this|it)\ (works|will\ work|would\ work|'?ll\ work|'?d\ work|should\ work)
    | that'?ll\ work | that'?d\ work | works\ for\ (me|us) | work\ for\ me | fine\ (by|with)\ me | okay\ with\ me
    | ok\ with\ me | good\ with\ me | good\ for\ me
    | \d\ (is|would\ be|will\ be|works|sounds)\ (fine|good|great|ok|okay|perfect|acceptable|doable|reasonable|fair)\b
    | (that'?s|that\ is|that\ would\ be|that'?d\ be|it'?s|sounds)\ (fine|perfect|fair|reasonable|doable|acceptable|
        great|good|agreeable|wonderful|awesome|excellent|a\ fair\ price|a\ good\ price|totally\ fine|more\ than\ fair|
        very\ fair|very\ reasonable|fair\ enough|a\ great\ price|great\ to\ me|good\ to\ me|fine\ with\ me)\b
    | (i|we)\ (can|could|will|'ll|would)\ (do|live\ with|work\ with|manage|swing|go\ with|handle|agree\ to|settle\ for)
        \ (that|this|it|those|the)\b
    | (i|we)\ can\ do\ that | (^|\ )can\ do(\ that|\ it)?\W*$
    | (i|we)('ll|\ will|\ would|'d|\ can|\ could)?\ (take|buy)\ (it|that|them|the\ (offer|deal|bike|car|one|room|
        apartment|place|unit|lot)|your\ offer|you\ up|this|those)\b
    | (i|we)('ll|\ will|\ would|'d)?\ (happily\ )?accept | accepted\b | (i|we)\ agree\b | agreed\b
    | let'?s\ (do|go\ with|book|schedule|make)\ (it|that|this|the|a\ deal|them)
    | let'?s\ (book|schedule|lock|set|go)\b
    | go\ ahead\ and\ (book|schedule|put|get) | (go|goes)\ ahead\b
    | you'?re\ on\b | ^sold\b | \bsold! | it'?s\ a\ go\b | count\ me\ in | i'?m\ in\b
    | (you|we)\ have\ an\ agreement | we\ have\ a\ deal | pleasure\ doing\ business | doing\ business\ with\ you
    | (you'?ll|you\ will|you'?re\ going\ to|you\ are\ going\ to|you'?re\ gonna)\ (love|enjoy)\b
    | (hope\ you\ )?enjoy\ (it|the|your|this)\b
    | glad\ we\ could | nice\ doing\ business | good\ doing\ business | great\ doing\ business
    | fair\ enough | (i|we)\ (can|could)\ (live|work)\ with\ (that|this|it)
    | (i|we)\ (will|'ll)\ (come|pick|be\ there|see\ you|bring|send|meet)
    | (deal|agreed)!
    | (that|it|this)\ (would|will|should|could|can|'ll|'d)\ (be\ )?(ok(ay)?|fine|work|do|be\ fine|better)\b
    | (make|making)\ (that|it|this)\ work | can\ work\ with\ (that|this|it) | (that|this|it)\ (can|could)\ work
    | (seems|looks|is)\ (very\ |pretty\ |more\ than\ |totally\ |quite\ )?(reasonable|fair|good\ to\ me|fine\ to\ me)
    | (i|we)\ (can|could|will|'ll)\ (accept|agree\ to)\ (that|this|it|those)
    | appreciate\ the\ (deal|offer) | thanks?\ (you\ )?for\ (the|a)\ (deal|great\ deal)
    | ^(yes,?\ |sure,?\ |ok(ay)?,?\ )?(i|we)\ (can|could|will|do)\W*$
    | ^(yes,?\ |sure,?\ |ok(ay)?,?\ )?(i|we)\ (can|could)\ (pick\ (it|them|this|that)?\ ?up|
        come\ (by|over|get|pick|and)|
        swing\ by|be\ there|meet\ (you|up))
    | (i\ think\ )?(i|we)\ can\ go\ with\ (you|that|it)
    | (,|\bso|\bthen|^ok(ay)?|^fine)\ deal\W*$
    | ,\ sure\W*$
    | (that'?s|that\ is|it'?s|it\ is|sounds\ like|what)\ (a\ |an\ )?(really\ |very\ |pretty\ )?(fair|good|great|
        reasonable|fantastic|excellent|awesome|nice|sweet|generous|amazing)\ (deal|offer|price|number)
    | ^(great|good|fair|nice|sweet)\ (deal|offer|price)\b | ^will\ do\b | ^can\ do\b
    | (is|are|be|seems|sounds)\ (acceptable|agreeable|doable|perfect|great\ for\ me|fine\ (for|with|by)\ me|
        good\ (for|with)\ me|ok(ay)?\ (for|with)\ me)
    | (i'?m|i\ am|we'?re|we\ are)\ (willing|happy|glad|fine|ok(ay)?|good)\ (to\ (pay|do|accept|take|go\ with)
        [ ](that|it|this|the|your)|with\ (that|it|this))
    | you\ (got|have)\ it\b | perfect\b
    | it'?s\ yours | they'?re\ yours | all\ yours
    | (that|it)\ (is|'s)?\ ?ok(ay)?\b
    | offer\ accepted | accept\ (your|the|that)\ (offer|price) | i'?ll\ go\ with
    | see\ you\ (then|soon|tomorrow|today|tonight|at)
    )""",
    re.IGNORECASE | re.VERBOSE,
)
WEAK_ACCEPT = re.compile(
    r"^(ok(ay)?|alright|all\ right|yes|yeah|yea|yep|yup|sure|great|awesome|excellent|cool|perfect|fine|"
    r"good|wonderful|absolutely|definitely|certainly|of\ course|done|right\ on|fantastic|lovely|nice|"
    r"sweet|works|gotcha|got\ it|hmm+,?\ ok(ay)?|well,?\ ok(ay)?|oh\ ok(ay)?|"
    r"yess+|yeas|eys|"  # typed misspellings of "yes"
    r"sure\ thing|if\ you\ (can\ )?(pick|come|pay|bring|get|take|do|deliver))\b",
    re.IGNORECASE | re.VERBOSE,
)
NEGATED = re.compile(r"\b(not|n't|no|never|nor|don'?t\ think|hardly|without)\W+(\w+\W+){0,2}$", re.I | re.X)
REJECT = re.compile(
    r"""\b(
      too\ (low|high|much|expensive|steep|rich|far\ apart|pricey|little|cheap)
    | (can'?t|cannot|can\ not|couldn'?t|won'?t|wouldn'?t|unable\ to|not\ able\ to)\ (really\ )?
        (go|do|accept|afford|take|pay|make(?!\ (a|any|much)\ difference)|agree|sell|drop|lower|come\ down|go\ down|
        go\ up|meet|part|justify|let)
    | not\ (interested|willing|possible|doable|enough|low\ enough|going\ to\ (work|happen)|gonna\ (work|happen)|
        what\ i\ (had|have)\ in\ mind|in\ (my|our)\ budget|within\ (my|our)\ budget)
    | no\ deal | no\ way | no\ thanks | no\ thank\ you | no,? sorry | (i|we)'?ll\ (have\ to\ )?pass | have\ to\ pass
    | pass\ on\ (this|that|it) | i\ pass | we\ pass
    | out\ of\ (my|our)\ (price\ )?(range|budget) | over\ (my|our)\ budget | above\ (my|our)\ budget
    | (look|looking|shop|shopping)\ (elsewhere|around|somewhere\ else) | keep\ looking | find\ (another|someone\ else)
    | reject | declin | not\ for\ me | doesn'?t\ work | does\ not\ work | won'?t\ work | wouldn'?t\ work
    | forget\ it | never\ ?mind | maybe\ (next\ time|another\ time|some\ other\ time)
    | couldn'?t\ agree | can'?t\ agree | not\ agree | don'?t\ agree | no\ agreement | not\ (a\ )?deal
    | waste\ of\ (my\ )?time | ridiculous | insulting | lowball | low\ ball | you'?re\ (crazy|kidding|joking)
    | not\ worth | way\ too | that'?s\ a\ lot | i\ don'?t\ think\ (so|i\ can) | not\ sure\ (i|we)\ can
    | thanks?\ (anyway|though|for\ your\ time|for\ the\ (time|info|information))
    | (i|we)\ (can|could)\ only\ (do|pay|afford|go) | (the\ )?(most|highest|max(imum)?)\ (i|we)\ (can|could)
    | end\ (this|the\ chat|the\ conversation) | no\ longer\ interested | not\ buying | walk\ away
    | (won'?t|can'?t|couldn'?t|unable\ to|not\ able\ to|not\ going\ to)\ (be\ able\ to\ )?(reach|make|come\ to|strike)
        \ (a|an)\ (deal|agreement)
    | (\d|\bthat|\bthis|\bit|offer|price)\ ?(is|'s|seems|sounds)
        \ (\w+ly\ |a\ (bit|little|tad)\ |pretty\ |kind\ of\ |rather\ |
        quite\ |really\ |very\ |way\ |still\ )?(too\ )?(low|high|steep|expensive|pricey)\b
    | unfortunately
    | ^no\b(?!\ (problem|worries|doubt|issue|prob|rush|pressure|need))(?!,?\ (i|we)\ (can|will|do)) | ^nah\b | ^nope\b
    | ^sorry\W*$ | not\ good\ enough
    )""",
    re.IGNORECASE | re.VERBOSE,
)
# The provider will not take the job at all (outcome "declined" when no price was ever quoted).
DECLINE = re.compile(
    r"""\b(
      (we|i)\ (don'?t|do\ not|no\ longer|can'?t|cannot|won'?t)\ (really\ )?
        (do|handle|service|work\ on|cover|offer|go|take|install|repair|fix|travel|come|drive|work|serve)\b
    | not\ taking\ (on\ )?(any\ )?(new\ )?(jobs|customers|clients|work|appointments|calls|projects)
    | (fully|completely|all|totally)\ booked | booked\ (up|solid) | too\ far
    | outside\ (of\ )?(our|my|the)\ (service\ )?
        (area|range|zone) | (not\ in|out\ of)\ (our|my)\ (service\ )?(area|range|zone)
    | can'?t\ (help|take\ (this|that|it|the\ job|on))
    | won'?t\ be\ able\ to\ (help|take|do|make\ it|fit|get)
    | not\ (something|a\ job|the\ kind\ of\ (work|job)|work)\ (that\ )?(we|i)\ (do|take)
    | we'?re\ (retired|closed|not\ taking) | (we|i)'?ll\ (have\ to\ )?pass | (we|i)\ (have\ to|must|need\ to)\ pass
    | pass\ on\ (this|that|it|the\ job) | not\ interested | no\ thanks | no\ thank\ you
    | (don'?t|do\ not)\ (do|service|handle|work\ on)\ (that|those|this|these|it)
    | not\ able\ to\ take | no\ availability | don'?t\ have\ (any\ )?(availability|openings|time|capacity)
    | (have\ to|must|going\ to|gonna)\ (decline|turn\ (this|it|that)\ down)
    | not\ worth\ (it|our\ time|my\ time|the\ trip)
    )""",
    re.IGNORECASE | re.VERBOSE,
)
# Not a yes and not a no: the deal is not made on this call.
DEFER = re.compile(
    r"""\b(
      let\ me\ (check|think|talk|ask|get\ back|run\ it|see\ what|confirm|look) | (i|we)'?ll\ (get|call|circle)\ back
    | (call|get)\ (you|me)\ back | think\ (about\ it|it\ over) | run\ (it|this|that)\ by | check\ with
    | talk\ (it\ over\ )?(to|with)\ (the\ )?(homeowner|owner|client|my|boss|wife|husband|partner)
    | (i|we)'?ll\ (let|pass\ (it|that|this)\ (along|on)\ to|relay|tell)\ (the\ )?(homeowner|owner|client|them|her|him)
    | (i|we)'?ll\ let\ you\ know | get\ back\ to\ you | not\ (ready|able)\ to\ commit
    | (i|we)\ need\ to\ (check|confirm|ask|talk)
    )""",
    re.IGNORECASE | re.VERBOSE,
)
# Words that make a number someone else's price, not an offer in this negotiation.
REFERENCE_BEFORE = re.compile(
    r"""\b(
      paid | bought | retail\w* | msrp | worth | valued? | value\ of | goes\ for | go\ for\ (about|around|over|up\ to)
    | sells?\ for | sold\ (it\ )?for | selling\ (them|these|those)\ for | online | kbb | blue\ book | originally
    | original(ly)?\ (price|cost)? | cost\ (me|us|him|her) | costs? | spent
    | other\ (places|people|stores|guys|companies)
    | elsewhere | competitors? | stores? | saves?\ you | coupon | new\ (one|ones)?\ (is|are|go|goes|cost|costs)
    | brand\ new | (in|at)\ a\ (store|shop) | market\ (value|price) | appraised | estimated\ at | insured
    | (they|others|everyone|people|shops|dealers?)\ (charge|sell|want|ask|get) | deposit | tax(es)? | fees?
    | would\ cost | could\ go\ for | can\ go\ for | typically | usually\ (go|goes|sell|sells|cost|costs|run|runs)
    | average | (other|another)\ (quote|estimate|bid) | quoted\ (me|us)\ | got\ a\ quote | last\ (time|year)
    | budget\ (for|of)\ (a|the)\ new | instead\ of | rather\ than | than
    | (you'?re|you\ are|you\ were)\ (asking|charging|wanting|offering|selling\ (it|them)\ for)
    | you\ (listed|posted)\ (it|them)?
    | wanted | was\ hoping | hoped | was\ asking | asked\ for | were\ asking | listed\ (it\ )?(at|for) | list\ price
    )\W+(\w+\W+){0,4}$""",
    re.IGNORECASE | re.VERBOSE,
)
REFERENCE_AFTER = re.compile(
    r"""^\W*(
      (new|brand\ new|retail|online|elsewhere|in\ stores?|at\ the\ store|originally|before|last\ (year|time|month))\b
    | (is|was|would\ be|seems|sounds)\ (too|way|a\ (bit|little|tad)|pretty|kind\ of|kinda|rather|really|very|quite|
        \w+ly|way\ too|far\ too|still|still\ too|just\ too)?\ ?(low|high|much|steep|expensive|cheap|a\ lot|ridiculous|
        insulting|out\ of|more\ than)
    | (doesn'?t|does\ not|won'?t|will\ not|isn'?t|is\ not|wouldn'?t)\ (work|do|cut\ it|fly|enough)
    | (is|was)\ not\ (enough|going\ to|gonna|possible|doable|acceptable|reasonable)
    | (worth|value|savings?|off|discount|deposit|fee|tax|budget\ for\ a\ new)
    | (that\ )?(you'?re|you\ are|you\ were|you'?ve\ been)\ (asking|wanting|listing|charging)
    | (that\ )?you\ (want|listed|posted|quoted|mentioned|asked)
    )""",
    re.IGNORECASE | re.VERBOSE,
)
ECHO_REJECT_BEFORE = re.compile(
    r"\b(can'?t|cannot|can\ not|couldn'?t|won'?t|wouldn'?t|not|unable\ to|no)\b\W+(\w+\W+){0,4}$", re.I | re.X
)
REFUSED_AFTER = re.compile(
    r"^\W*(is|was|would\ be|seems|sounds)\ (\w+\ ){0,2}(low|high|much|steep|expensive|cheap|ridiculous|insulting)|"
    r"^\W*(doesn'?t|won'?t|isn'?t|is\ not|wouldn'?t)\b",
    re.I | re.X,
)
ATTRIBUTIVE_AFTER = re.compile(
    r"^\s*(?!an?\b|the\b|and\b|or\b|but\b|for\b|to\b|if\b|is\b|it\b|i\b|that\b|this\b|with\b|plus\b|per\b|each\b|"
    r"a\ month\b|total\b|flat\b|cash\b|max\b|firm\b|tops\b|even\b|obo\b|then\b|so\b|now\b|today\b|tonight\b|"
    r"and\b|sound\b|sounds\b|work\b|works\b|would\b|will\b|please\b|deal\b|would\b|is\b|was\b|since\b|because\b|"
    r"as\b|at\b|on\b|in\b|including\b|includes\b|included\b|out\b|up\b|down\b|or\b|lowest\b|range\b|instead\b|"
    r"right\b|ok\b|okay\b|though\b|too\b|really\b|price\b|offer\b|thanks\b|thank\b|which\b|including\b|"
    r"dollars?\b|bucks?\b|even\b|all\b|altogether\b|together\b|in\b|you\b|we\b|do\b)"
    r"[a-z]{3,}\b",
    re.IGNORECASE,
)
CONDITIONS = re.compile(
    r"""\b(
      plus\ (the\ )?(parts|materials?|supplies|tax(es)?|hst|gst|the\ (cost\ of\ )?parts|disposal|permit\w*|
        equipment|mileage|travel|fuel|shipping|delivery|labor|labour|the\ (call[- ]?out|trip|service|diagnostic|
        visit)\ (fee|charge))
    | (parts|materials?)\ (are\ |is\ )?(extra|separate|additional|not\ included|on\ top|billed\ separately)
    | not\ including\ (the\ )?(parts|materials?|tax) | (parts|materials?)\ not\ included
    | (including|includes|included)\ (the\ )?(parts|materials?|labor|labour|tax|disposal|everything)
    | (two|three|four|one|1|2|3|4)[-\ ]hour\ minimum | minimum\ of\ (one|two|three|an?|1|2|3)\ hours?
    | cash\ only | cash\ price | if\ (you\ )?pay(ing)?\ (in\ )?cash
    | (fee|charge|it)('s|\ is|\ gets)?\ waived\ (if|when)\ [^.,;!?]+
    | waive\ (it|the\ fee|that)\ (if|when)\ [^.,;!?]+
    | (applied|credited|goes)\ (to|toward|towards)\ the\ (repair|job|work|bill) | after\ hours\ [^.,;!?]{0,30}
    | weekend\ rate | emergency\ (rate|fee|surcharge)
    | (?<=\d\ )each\b | apiece | a\ piece
    | per\ (unit|fixture|window|room|fan|item|door|outlet|light|toilet|sink|faucet|tree|panel|vent|zone|square\ foot|
        sq\ ?ft|linear\ foot)
    | if\ (you|we)\ (book|schedule)\ [^.,;!?]+ | (with|w/)\ a\ (one|two|1|2)[-\ ]year\ warranty
    )""",
    re.IGNORECASE | re.VERBOSE,
)
BUT = re.compile(
    r"^\W*(\w+\W+){0,4}?(but|however|though|except|unfortunately)\b.*\b(can'?t|cannot|not|n't|can\ only|could\ only|"
    r"only\ (have|afford|pay|do|go|want)|too|budget|afford|"
    r"limited|lower|less|high|higher|more\ than|much)\b",
    re.I,
)
QUESTION_START = re.compile(
    r"(does|do|is|are|would|will|can|could|should|how|what|did|was|were|shall|may|any|if|so)\b", re.I
)
# Arranging the pick-up or the visit right after an offer is taking it ("Great, when can you come out?").
LOGISTICS = re.compile(
    r"\b((when|what\ time)\ (can|could|should|would|will|do)\ (you|i|we)\ (pick|get\ it|stop\ by|meet|swing\ by|"
    r"arrange)|(want|like|able)\ to\ (pick|come\ get)\ (it|them)\ up|arrange\ the\ (pick|pickup|pick-up|delivery)|"
    r"(what'?s|what\ is)\ (your|the)\ address|send\ (me\ )?(your|the)\ address|where\ (should|can|do)\ (i|we)\ "
    r"(meet|pick))",
    re.I | re.X,
)
NEGATED_LOGISTICS = re.compile(r"\b(if|before|unless|first)\b", re.I)
RETROSPECTIVE = re.compile(
    r"\b(glad\ we|pleasure\ doing|(nice|good|great)\ doing\ business|"
    r"thanks?\ (you\ )?for\ (the|your)\ (business|purchase)|"
    r"enjoy\ (it|the|your)|we\ (made|have|reached)\ a\ deal|(you'?ll|you\ will|going\ to|gonna)\ love)",
    re.I | re.X,
)
GOODBYE = re.compile(r"\b(bye|goodbye|good\ ?night|have\ a\ (good|great|nice)\ (day|one|evening|night))\b", re.I)
TO_THEIR_OFFER = re.compile(
    r"\b(accept|take|go with|agree to|do)\s+(your|that|the|this)\s+(offer|price|number|amount|deal|counter)", re.I
)
FLAT_CUE = re.compile(r"\b(total|flat|all[- ]in|out the door|everything included|for the (whole|entire) job)\b", re.I)

# ---------------------------------------------------------------------------------------------------------
# Around a number: the words next to it that say what kind of number it is.

# A deal struck on one's own number, said with the number ("let's call it 38 and it's a deal").
OWN_DEAL = re.compile(r"\b(deal|it is|it's|call it|make it|done)\b", re.I)
# Just before a number: it is the total ("for a total of $14").
TOTAL_LEAD = re.compile(r"\btotal( of| is| would be| comes to)?\W*$", re.I)
# Just before a number: an acceptance names it ("your offer of $1325").
NAMED_LEAD = re.compile(r"\b(offer|price|deal|number|amount)\s+(of|at|for)\W*$", re.I)
# Just before a money amount: an article, so the amount may be attributive ("a $20 case").
ARTICLE_BEFORE = re.compile(r"\b(a|an)\s*$", re.I)
# Just before a number: a comparison, so a refusal before it is not about this number ("can't go less than").
COMPARATIVE_BEFORE = re.compile(r"\b(less|more|lower|higher|below|under|over|than)\W*$", re.I)

# Just before a number: a phone menu's key or an extension ("for billing press 3", "press 1 or 2", "option 4",
# "extension 205", "dial 0"), never a price. The optional middle takes the next key of a list ("1 or 2").
MENU_KEY_BEFORE = re.compile(
    r"""\b(press|pressing|push|dial|dialing|hit|enter|select|choose|option|extension|ext)\b[\s.:#,]*
    ((\w+)[\s,]+(or|and|then|followed\ by)[\s,]+)?$""",
    re.IGNORECASE | re.VERBOSE,
)
# Just after a number: it names a menu choice ("2 for billing", "1 to speak to a technician").
MENU_KEY_AFTER = re.compile(
    r"""^\W*(for\ (service|sales|billing|support|estimates?|scheduling|appointments?|hours|directions|spanish|english|
    (an?\ |the\ )?(operator|person|representative|receptionist|technician|agent|dispatcher))|
    to\ (speak|talk|reach|leave|repeat|hear|schedule|return)\b)""",
    re.IGNORECASE | re.VERBOSE,
)

# ---------------------------------------------------------------------------------------------------------
# After a deal.

# Taking it back ("changed my mind", "deal's off").
BACK_OUT = re.compile(
    r"""\b(no\ deal|changed\ my\ mind|never\ ?mind|can'?t\ do\ (that|it)|not\ interested|(i|we)'?ll\ pass|forget\ it|
    deal'?s\ off|call\ it\ off|not\ going\ to\ work|couldn'?t\ agree|can'?t\ agree|reject\ (your|the|that|this)\ offer|
    thanks?\ (you\ )?anyway|no\ thanks|no\ thank\ you|look(ing)?\ elsewhere|(not|won'?t\ be)\ a\ good\ fit|
    maybe\ (next|another)\ time|(i'?ll|we'?ll)\ keep\ looking|sorry\ we\ could|(best\ of|good)\ luck|
    (won'?t|can'?t|couldn'?t|unable\ to|not\ able\ to|not\ going\ to)\ (be\ able\ to\ )?(reach|make|come\ to|strike)
    \ (a|an)\ (deal|agreement))""",
    re.IGNORECASE | re.VERBOSE,
)

