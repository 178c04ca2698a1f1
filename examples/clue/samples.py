"""Generator of small CLUE-format data sets (the bundled samples and the test data).

Every sentence is built from templates and word lists written for this project; in
each task a simple cue decides the label (a topic keyword, a pronoun, an entity list,
a "编号是" phrase, ...), so a small model can learn it. Files and fields follow the
CLUE 1.1 distribution exactly.

    python examples/clue/samples.py [OUT_DIR]     # rewrites examples/data/clue/<task>/

Only Chinese characters and Chinese punctuation are used in texts (ids aside), so a
vocabulary built from the characters of the files covers every token.
"""
import json
import os
import random
import sys

FILLERS = ["今天", "我们", "一起", "看到", "觉得", "非常", "有点", "这个", "那些", "最近",
           "听说", "已经", "还是", "真的", "大家", "可以", "马上", "后来", "其实", "仍然"]


def _filler(rng, k=2):
    return "".join(rng.choice(FILLERS) for _ in range(k))


def _ids(start, n):
    return range(start, start + n)


# --------------------------------------------------------------------------- classification
AFQMC_TOPICS = ["花呗还款", "借呗额度", "余额提现", "账单分期", "信用积分", "红包使用"]
AFQMC_TEMPLATES = ["{t}怎么操作", "请问{t}在哪里设置", "我的{t}出了问题", "为什么{t}不能用",
                   "{t}需要多久", "怎样开通{t}", "{t}有没有手续费"]


def afqmc(rng, split, n, start):
    rows = []
    for i in _ids(start, n):
        a = rng.choice(AFQMC_TOPICS)
        same = rng.random() < 0.5
        b = a if same else rng.choice([t for t in AFQMC_TOPICS if t != a])
        row = {"sentence1": rng.choice(AFQMC_TEMPLATES).format(t=a),
               "sentence2": rng.choice(AFQMC_TEMPLATES).format(t=b)}
        if split == "test":
            row = {"id": i, **row}
        else:
            row["label"] = "1" if same else "0"
        rows.append(row)
    return {f"{split}.json": rows}


TNEWS_CLASSES = [
    ("100", "news_story", "故事"), ("101", "news_culture", "文化"),
    ("102", "news_entertainment", "明星"), ("103", "news_sports", "球赛"),
    ("104", "news_finance", "理财"), ("106", "news_house", "房价"), ("107", "news_car", "汽车"),
    ("108", "news_edu", "考试"), ("109", "news_tech", "芯片"), ("110", "news_military", "军舰"),
    ("112", "news_travel", "旅游"), ("113", "news_world", "国际"), ("114", "news_stock", "股市"),
    ("115", "news_agriculture", "农田"), ("116", "news_game", "游戏"),
]
TNEWS_TEMPLATES = ["{a}的{k}让人{b}", "{k}最新消息：{a}{b}", "关于{k}，{a}{b}", "{a}{k}{b}？"]


def tnews(rng, split, n, start, classes=None):
    classes = classes or TNEWS_CLASSES
    rows = []
    for i in _ids(start, n):
        label, desc, key = rng.choice(classes)
        sentence = rng.choice(TNEWS_TEMPLATES).format(a=_filler(rng), b=_filler(rng), k=key)
        if split == "test":
            rows.append({"id": i, "sentence": sentence, "keywords": ""})
        else:
            rows.append({"label": label, "label_desc": desc, "sentence": sentence,
                         "keywords": key})
    files = {f"{split}.json": rows}
    files["labels.json"] = [{"label": label, "label_desc": desc}
                            for label, desc, _ in TNEWS_CLASSES]
    return files


IFLYTEK_NAMES = {0: "打车", 1: "地图导航", 2: "免费无线", 3: "租车", 117: "收款", 118: "其他"}
IFLYTEK_CUES = {0: "一键叫车", 1: "规划路线", 2: "连接热点", 3: "短期租车", 117: "扫码收款",
                118: "记录心情"}


def iflytek(rng, split, n, start):
    rows = []
    for i in _ids(start, n):
        label = rng.choice(sorted(IFLYTEK_CUES))
        sentence = f"这款应用可以{IFLYTEK_CUES[label]}，{_filler(rng, 3)}。{_filler(rng)}"
        if split == "test":
            rows.append({"id": i, "sentence": sentence})
        else:
            rows.append({"label": str(label), "label_des": IFLYTEK_NAMES[label],
                         "sentence": sentence})
    return {f"{split}.json": rows,
            "labels.json": [{"label": str(k), "label_des": IFLYTEK_NAMES.get(k, f"类别{k}")}
                            for k in range(119)]}


NLI_SUBJECTS = ["小王", "老师", "邻居", "这家店", "我的朋友", "表哥", "班长"]
NLI_ACTIONS = ["去了公园", "买了新书", "做了晚饭", "修好了自行车", "参加了比赛", "看了电影"]
NLI_HYPOTHESES = {"entailment": "{s}做过一些事情。", "neutral": "{s}可能心情很好。",
                  "contradiction": "{s}昨天什么也没有做。"}


def _nli(rng, split, n, start, extra=False):
    rows = []
    for i in _ids(start, n):
        s = rng.choice(NLI_SUBJECTS)
        label = rng.choice(sorted(NLI_HYPOTHESES))
        row = {"sentence1": f"{s}昨天{rng.choice(NLI_ACTIONS)}。",
               "sentence2": NLI_HYPOTHESES[label].format(s=s)}
        if extra:
            row = {"level": rng.choice(["easy", "medium", "hard"]), **row,
                   "genre": "news", "prem_id": f"news_{i}"}
        if split == "test":
            row["id"] = i
        else:
            row["label"] = label
            if extra:
                row["id"] = i
        rows.append(row)
    return rows


def cmnli(rng, split, n, start):
    rows = _nli(rng, split, n, start)
    if split == "train" and rows:  # the real files hold a few "-" (no agreement) records
        rows.insert(1, {**rows[0], "label": "-"})
    return {f"{split}.json": rows}


def ocnli(rng, split, n, start):
    name = "train.50k.json" if split == "train" else f"{split}.json"
    return {name: _nli(rng, split, n, start, extra=True)}


WSC_PEOPLE = ["小明", "阿姨", "哥哥", "老爷爷"]
WSC_OBJECTS = ["书包", "杯子", "玩具", "箱子"]
WSC_PLACES = ["柜子", "车里", "桌上"]


def wsc(rng, split, n, start):
    rows = []
    for i in _ids(start, n):
        person, obj = rng.choice(WSC_PEOPLE), rng.choice(WSC_OBJECTS)
        pronoun = rng.choice(["他", "它"])
        head = f"{person}把{obj}放在{rng.choice(WSC_PLACES)}，因为"
        text = head + f"{pronoun}太{rng.choice(['累', '重', '旧'])}了。"
        noun = rng.choice([person, obj])
        true = (noun == person) == (pronoun == "他")
        row = {"target": {"span2_index": len(head), "span1_index": text.index(noun),
                          "span1_text": noun, "span2_text": pronoun},
               "idx": i, "text": text}
        if split == "test":
            row = {"id": i, **row}
        else:
            row["label"] = "true" if true else "false"
        rows.append(row)
    return {f"{split}.json": rows}


CSL_TERMS = ["神经网络", "图像识别", "土壤湿度", "作物产量", "供应链", "风险评估", "信号处理",
             "边缘计算", "城市交通", "碳排放", "语音合成", "水质监测"]


def csl(rng, split, n, start):
    rows = []
    for i in _ids(start, n):
        a, b, c, fake = rng.sample(CSL_TERMS, 4)
        abst = f"本文研究{a}与{b}之间的关系，提出一种基于{c}的新方法，实验表明该方法{_filler(rng)}有效。"
        real = rng.random() < 0.5
        keywords = [a, b, c] if real else [a, fake, c]
        row = {"id": i, "abst": abst, "keyword": keywords}
        if split != "test":
            row["label"] = "1" if real else "0"
        rows.append(row)
    return {f"{split}.json": rows}


# --------------------------------------------------------------------------- NER
CLUENER_ENTITIES = {
    "name": ["王小明", "李华", "陈静", "赵大勇", "周晓梅"],
    "address": ["北京市海淀区", "杭州西湖边", "成都春熙路", "南京新街口"],
    "company": ["星辰科技公司", "蓝海贸易集团", "远山食品厂"],
    "organization": ["青年志愿者协会", "市篮球队", "校合唱团"],
    "government": ["市教育局", "交通管理局", "区卫生委员会"],
    "position": ["总经理", "教练", "记者", "工程师"],
    "book": ["山间来信", "海边的灯塔", "云上人家"],
    "game": ["星际征途", "王者之路", "方块大师"],
    "movie": ["风中的约定", "夏日列车", "远方的歌"],
    "scene": ["黄山", "故宫博物院", "西湖"],
}
CLUENER_TEMPLATES = [
    "{name}是{company}的{position}。",
    "{name}在{address}读完了《{book}》。",
    "{organization}邀请{name}去{scene}参观。",
    "{government}发布通知，电影{movie}将在{address}上映。",
    "{position}{name}最近在玩{game}。",
]


def fill_entities(rng, template, entities):
    """Fill ``{type}`` slots; returns the text and its CLUENER label dict."""
    text, label, rest = "", {}, template
    while "{" in rest:
        before, slot = rest.split("{", 1)
        kind, rest = slot.split("}", 1)
        text += before
        entity = rng.choice(entities[kind])
        label.setdefault(kind, {}).setdefault(entity, []).append(
            [len(text), len(text) + len(entity) - 1])
        text += entity
    return text + rest, label


def cluener(rng, split, n, start, templates=None, entities=None):
    rows = []
    for i in _ids(start, n):
        text, label = fill_entities(rng, rng.choice(templates or CLUENER_TEMPLATES),
                                    entities or CLUENER_ENTITIES)
        rows.append({"id": i, "text": text} if split == "test" else {"text": text, "label": label})
    return {f"{split}.json": rows}


# --------------------------------------------------------------------------- reading comprehension
CMRC_SUBJECTS = ["东湖大桥", "青石书院", "南山灯塔", "北港码头", "白云水库", "红叶茶园"]
CMRC_CODE_CHARS = "甲乙丙丁戊己庚辛壬癸"
CMRC_FACTS = ["{s}位于城市的东边。", "{s}每天都有很多游客。", "{s}已经有很多年的历史。",
              "{s}附近有一条小河。", "{s}在夜里非常安静。"]


def cmrc2018(rng, split, n, start, facts=(2, 9)):
    data = []
    for i in _ids(start, n):
        subject = rng.choice(CMRC_SUBJECTS)
        code = "".join(rng.choice(CMRC_CODE_CHARS) for _ in range(rng.randint(2, 4)))
        sentences = [rng.choice(CMRC_FACTS).format(s=rng.choice(CMRC_SUBJECTS))
                     for _ in range(rng.randint(*facts))]
        key = f"{subject}的编号是{code}。"
        sentences.insert(rng.randint(0, len(sentences)), key)
        context = "".join(sentences)
        answer_start = context.index(key) + len(subject) + 4
        prefix = split.upper()
        qa = {"question": f"{subject}的编号是什么？", "id": f"{prefix}_{i}_QUERY_0"}
        if split != "test":
            copies = 1 if split == "train" else 3
            qa["answers"] = [{"text": code, "answer_start": answer_start}] * copies
        data.append({"paragraphs": [{"id": f"{prefix}_{i}", "context": context, "qas": [qa]}],
                     "id": f"{prefix}_{i}", "title": subject})
    return {f"{split}.json": {"version": "v1.0", "data": data}}


C3_PLACES = ["图书馆", "游泳馆", "电影院", "菜市场", "动物园", "博物馆"]
C3_TIMES = ["上午", "下午", "晚上", "周末"]


def c3(rng, split, n, start):
    files = {}
    kinds = ["d", "m"] if split != "test" else ["test"]
    per = [n - n // 2, n // 2] if split != "test" else [n]
    qid = start
    for kind, count in zip(kinds, per):
        items = []
        for k in range(count):
            place = rng.choice(C3_PLACES)
            when = rng.choice(C3_TIMES)
            if kind == "m":
                lines = [f"{_filler(rng)}，小李{when}去了{place}，{_filler(rng)}。"]
                question = "小李去了哪里？"
            else:
                lines = [f"男：你{when}打算做什么？", f"女：我想去{place}看看。"]
                question = "女的想去哪里？"
            choices = [place] + rng.sample([p for p in C3_PLACES if p != place],
                                           rng.choice([2, 3]))
            rng.shuffle(choices)
            qa = {"question": question, "choice": choices}
            if split == "test":
                qa["id"] = qid
            else:
                qa["answer"] = place
            qid += 1
            items.append([lines, [qa], f"{qid}-{k}"])
        files[f"{kind}-{split}.json" if kind != "test" else "test.json"] = items
    return files


CHID_IDIOMS = {
    "画蛇添足": "多做了不必要的事，反而坏了事情",
    "守株待兔": "不主动努力，只想等待意外的收获",
    "亡羊补牢": "出了问题以后及时补救",
    "井底之蛙": "眼界狭小的人",
    "掩耳盗铃": "自己欺骗自己",
    "刻舟求剑": "拘泥成法，不懂变通",
    "对牛弹琴": "说话不看对象",
    "狐假虎威": "倚仗别人的势力欺压人",
    "拔苗助长": "急于求成，反而坏事",
    "杯弓蛇影": "疑神疑鬼，自相惊扰",
    "一日千里": "进展极快",
    "半途而废": "事情做到一半就停止",
}
CHID_CUES = {
    "画蛇添足": "文章本来写得很好，他又加了一段多余的话",
    "守株待兔": "他不去找工作，整天坐在家里等机会",
    "亡羊补牢": "丢了东西以后，他马上换了一把新锁",
    "井底之蛙": "他从没离开过小村子，却说外面没什么好看的",
    "掩耳盗铃": "他把错误藏起来，以为别人都不知道",
    "刻舟求剑": "情况早就变了，他还按照老办法做",
    "对牛弹琴": "他给小孩子讲复杂的理论",
    "狐假虎威": "他仗着舅舅是经理，在公司里欺负新人",
    "拔苗助长": "家长让孩子每天学习到半夜",
    "杯弓蛇影": "听到一点声音，他就以为有小偷",
    "一日千里": "这座城市发展得很快",
    "半途而废": "他学了两天画画就不学了",
}


def chid(rng, split, n, start):
    idioms = sorted(CHID_IDIOMS)
    rows, answers = [], {}
    tag = start
    for _ in range(n):
        blanks = rng.sample(idioms, rng.choice([1, 2]))
        candidates = blanks + rng.sample([i for i in idioms if i not in blanks], 10 - len(blanks))
        rng.shuffle(candidates)
        content = []
        for idiom in blanks:
            name = f"#idiom{tag:06d}#"
            tag += 1
            content.append(f"{CHID_CUES[idiom]}，{_filler(rng)}真是{name}。")
            answers[name] = candidates.index(idiom)
        rows.append({"candidates": candidates, "content": content})
    files = {f"{split}.json": rows}
    if split != "test":
        files[f"{split}_answer.json"] = answers
    files["idiomDict.json"] = CHID_IDIOMS
    return files


GENERATORS = {"afqmc": afqmc, "tnews": tnews, "iflytek": iflytek, "cmnli": cmnli,
              "ocnli": ocnli, "wsc": wsc, "csl": csl, "cluener": cluener,
              "cmrc2018": cmrc2018, "c3": c3, "chid": chid}
#: first id / idiom tag of each split (ids stay unique across splits)
ID_BASE = {"train": 0, "dev": 100000, "test": 200000}


def write_files(directory, files):
    """Write ``{name: content}``: lists of dicts as JSON lines, the rest as JSON
    (C3's lists of items are JSON too)."""
    os.makedirs(directory, exist_ok=True)
    for name, content in files.items():
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            if isinstance(content, list) and content and isinstance(content[0], dict):
                for row in content:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                json.dump(content, f, ensure_ascii=False, indent=1)
                f.write("\n")


def generate(task, directory, sizes=(40, 16, 16), seed=0, **kwargs):
    """Write ``task``'s train/dev/test files (``sizes`` examples each) to ``directory``."""
    rng = random.Random(f"{task}-{seed}")
    for split, n in zip(("train", "dev", "test"), sizes):
        write_files(directory, GENERATORS[task](rng, split, n, ID_BASE[split], **kwargs))
    return directory


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    root = argv[0] if argv else os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "data", "clue")
    for task in GENERATORS:
        generate(task, os.path.join(root, task))
        print(f"wrote {os.path.join(root, task)}")


if __name__ == "__main__":
    main()
