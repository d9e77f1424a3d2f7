"""Source of data/lexicon/word_class.tsv, the word-class lexicon of the `@word_class` labeler.

Classes are coarse Universal-Dependencies part-of-speech tags, assigned by hand to the
function words of English and to the non-noun words of glassbox's default data set (a word
takes the class of its most frequent use there); every other word of the default set is a
NOUN. Run `python3 scripts/word_class_lexicon.py > data/lexicon/word_class.tsv`.
"""
import json
import pathlib
import re

CLASSES = {
    "DET": "a an the this these those that each every any no all some another either neither",
    "PRON": """i you he she it we they me him us them my your his her its our their mine yours
        who whom whose what which myself yourself itself themselves something anything nothing
        everything someone anyone everyone nobody""",
    "ADP": """about above across after against along among around at before behind below beneath
        beside between beyond by despite down during except for from in inside into near of off
        on onto out outside over per since than through throughout to toward towards under
        underneath up upon via with within without al""",
    "CCONJ": "and but or nor yet",
    "SCONJ": "because if although though unless until while whereas whether",
    "AUX": """am is are was were be been being have has had do does did will would shall should
        can could may might must""",
    "PART": "not n't",
    "ADV": """again aside carefully early far fast faster finely gently immediately just late
        longer mostly often online overnight perfectly sharply slowly so still thinly tightly
        today tomorrow tonight too twice well yesterday how when where why more most once less
        much forward very also already soon never always sometimes here there then now ever
        almost quite rather together""",
    "NUM": """zero one two three four five six seven eight nine ten eleven twelve thirteen
        fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty
        seventy eighty ninety hundred thousand million billion""",
    "PROPN": "alps friday jupiter mars mondays sunday thursday saturday earth",
    "ADJ": """absolute active aged ancient annual available best better black blue broken central
        chemical classified clear crispy current dark delicious dente distant distilled dry
        emergency first five-a-side fluffy foreign fourth free fresh full genetic golden good
        greased grilled heavy high higher higher-rate highest hot human immune large largest last
        light living local logarithmic long lower lowest major many middle national negative new
        next ninth northern old oldest olympic other pale perfect pickled professional protected
        rare red resistant ripe roasted safe salty second secret simple small soft special spicy
        sticky strong strongest such suspicious sweeter tall tenth ten-year three-year tight tiny
        volcanic warm wild wonderful young""",
    "VERB": """abandon add approved ask attract avoid bakes become begin benched blackens boil
        boils break bring broke build burn buy calibrate called cancel capture carry caused
        causes change changed charge charging check choose chop climbed close coached
        communicate compare conducts confirmed contains control convert cook cooked cooking
        cooled copy count cover crash created cut dancing depend deposit describe detected
        dilute dispose diversify divide drink drop dropped eased eat enrolled enter entered
        expanding fail fails fall falls feed fell filled find finished fit focus fold follow
        found freeze given goes grate halted happens heat heating held hold injured invests
        issued jog jump keep knead known leave left let made make makes marinate measure
        measured melting melts move moved need needs negotiate observe open opens owe pass pay
        pays peel play postponed pour practise prefers preheat produce promoted protesting
        published pushed put qualify raise raised ran reach read receive recorded recover
        release remember rent rents repeat replicate report reported request retired return
        revealed ride rinse ripen rise rising roast rose row run runs save saved score scored
        seal sell sells send sent separate sequenced serve serves serving set shake showed
        shrinking sign signed signing simmered sink sketch sleep slice slicing smells sold spin
        spread sprinkle squeeze standing start stir stopped store stretch swing switch
        synthesised take takes taste threw throws toast took trading train trains transfer
        travel turned twinkle update use uses waited wash watch wear weigh weighing went whisk
        winning withdrawing won work write""",
}


def main():
    lexicon = {}
    for cls, words in CLASSES.items():
        for w in words.split():
            assert w not in lexicon, f"{w} listed twice"
            lexicon[w] = cls
    default = pathlib.Path(__file__).resolve().parent.parent / "data/sets/default.jsonl"
    for line in default.read_text().splitlines():
        for w in json.loads(line)["text"].split():
            w = re.sub(r"^[^\w]+|[^\w]+$", "", w).lower()
            if w and not w[0].isdigit() and "'" not in w:
                lexicon.setdefault(w, "NOUN")
    print("# word<TAB>class (coarse UD tags); made by scripts/word_class_lexicon.py")
    for w in sorted(lexicon):
        print(f"{w}\t{lexicon[w]}")


main()
