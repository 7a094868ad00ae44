"""Write the project's own built-in sample data into datasets/.

Everything here is generated from small word lists by a seeded RNG, so the
files are reproducible and owe nothing to any published corpus:

    python tools/make_sample_data.py            # all tasks
    python tools/make_sample_data.py --task summarization

summarization: short Chinese news items whose summary is "<city><organisation>
<action><object>", stated somewhere in the text among filler sentences. A tiny
model can learn to find and copy it within minutes on a CPU, which is what the
default `python train.py` needs to show real learning.

classification: short Chinese news headlines in four topics (体育, 科技, 财经, 美食),
each naming one topic word among shared filler, with imbalanced classes so that
beating the majority class means the model read the text.

lm: a Chinese corpus for masked and causal language modelling. A made-up explorer,
蔺琰 (two characters used nowhere else), appears in fixed contexts ("探险家蔺琰带领队伍...")
so a masked LM visibly learns to fill "探险家[MASK][MASK]带领队伍" with the name.
"""
import argparse
import json
import os
import random

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_DIR = os.path.join(ROOT, "datasets")

CITIES = [
    "北京", "上海", "广州", "深圳", "杭州", "南京", "成都", "武汉", "西安", "重庆", "天津", "苏州", "长沙", "郑州",
    "青岛", "厦门", "合肥", "济南", "昆明", "沈阳", "大连", "福州", "南昌", "贵阳", "兰州", "太原", "南宁", "海口",
]
ORGS = [
    "市政府", "教育局", "科技馆", "图书馆", "交通局", "气象台", "体育局", "博物馆", "农业局", "卫生局", "文旅局",
    "环保局", "消防支队", "税务局", "统计局", "第一中学", "人民医院", "电力公司", "地铁集团", "水务集团",
]
ACTIONS = ["启动", "发布", "完成", "推出", "开展", "举办", "建成", "宣布"]
OBJECTS = [
    "智慧交通试点", "新版服务指南", "秋季招聘活动", "垃圾分类宣传周", "公共图书借阅计划", "防汛应急演练",
    "青少年科技大赛", "老旧小区改造工程", "数字政务平台", "夜间经济节", "社区养老服务站", "绿色出行月",
    "中小学体育联赛", "农产品展销会", "城市马拉松", "科普讲座系列", "文物修复项目", "新能源公交线路",
    "便民服务热线", "湿地保护行动", "职业技能培训", "空气质量监测网", "乡村振兴示范点", "夏季消夏音乐会",
]
LEADS = ["{date}，{who}对外表示，已经正式{what}。", "记者{date}从{who}获悉，{who}{what}。", "{date}消息，{who}近日{what}。"]
FILLERS = [
    "活动现场气氛热烈，吸引了不少市民前来参观。", "相关负责人介绍，前期准备工作已经全部就绪。", "不少居民表示，这件事情关系到日常生活。",
    "据了解，这项工作得到了多个部门的大力支持。", "工作人员提醒，有需要的市民可以提前预约。", "专家认为，此举有助于提升城市管理水平。",
    "下一步，有关方面还将继续听取群众意见。", "当天上午，现场还设置了咨询台和展示区。", "据悉，今年以来类似的工作已经开展多次。",
    "有市民在网上留言，希望这类活动能够常态化。", "主办方表示，将根据反馈不断完善相关安排。", "天气晴好，前来参加的人数比预期更多。",
    "随后，与会人员还进行了交流讨论。", "整个过程秩序井然，没有发生安全问题。", "这也是该单位今年的一项重点任务。",
]
DETAILS = ["据介绍，此次{obj}预计覆盖{num}万人。", "按照计划，{obj}将持续{num}周。", "目前{obj}已有{num}个单位报名参加。"]


def _date(rng):
    return f"{rng.randint(1, 12)}月{rng.randint(1, 28)}日"


def summarization_example(rng):
    city, org, action, obj = rng.choice(CITIES), rng.choice(ORGS), rng.choice(ACTIONS), rng.choice(OBJECTS)
    who, what = city + org, action + obj
    lead = rng.choice(LEADS).format(date=_date(rng), who=who, what=what)
    detail = rng.choice(DETAILS).format(obj=obj, num=rng.randint(2, 60))
    fillers = rng.sample(FILLERS, rng.randint(1, 4))
    # The key sentence is not always first, so the model must find it rather than copy a fixed span.
    parts = fillers[:]
    parts.insert(rng.randint(0, min(1, len(parts))), lead)
    parts.append(detail)
    return {"content": "".join(parts), "title": who + what}


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows to {os.path.relpath(path, ROOT)}")


def make_summarization(seed=1234, n_train=2000, n_dev=100, n_test=50):
    rng = random.Random(seed)
    rows = [summarization_example(rng) for _ in range(n_train + n_dev + n_test)]
    out = os.path.join(DATA_DIR, "sample_summarization")
    write_jsonl(os.path.join(out, "train.jsonl"), rows[:n_train])
    write_jsonl(os.path.join(out, "dev.jsonl"), rows[n_train:n_train + n_dev])
    write_jsonl(os.path.join(out, "test.jsonl"), rows[n_train + n_dev:])


EN_CITIES = ["Lyon", "Porto", "Dublin", "Oslo", "Quebec", "Perth", "Austin", "Kyoto", "Cusco", "Gdansk", "Tartu", "Bergen"]
EN_ORGS = ["city council", "library", "science museum", "transit agency", "school board", "water utility", "zoo", "hospital"]
EN_ACTIONS = ["opens", "launches", "announces", "completes", "cancels", "expands"]
EN_OBJECTS = ["night bus routes", "a coding club", "a river clean-up", "free museum days", "a bike lending scheme",
              "a new reading room", "solar roof panels", "a jazz festival", "a tree planting drive", "winter shelters"]
EN_FILLERS = ["Officials said preparations went smoothly.", "Residents welcomed the news on social media.",
              "The plan was first discussed last spring.", "More details will follow next week.",
              "Local businesses expect more visitors.", "Volunteers helped on the opening day."]


def custom_json_example(rng):
    """English rows with other field names, to show text_column/summary_column on a JSON list."""
    city, org, action, obj = rng.choice(EN_CITIES), rng.choice(EN_ORGS), rng.choice(EN_ACTIONS), rng.choice(EN_OBJECTS)
    lead = f"On {rng.choice(['Monday', 'Tuesday', 'Friday', 'Sunday'])}, the {org} of {city} said it {action} {obj}."
    body = rng.sample(EN_FILLERS, rng.randint(1, 3))
    body.insert(rng.randint(0, 1), lead)
    return {"id": rng.randint(10**5, 10**6), "article": " ".join(body), "headline": f"{city} {org} {action} {obj}"}


def make_custom_json(seed=99, n_train=300, n_dev=40):
    rng = random.Random(seed)
    rows = [custom_json_example(rng) for _ in range(n_train + n_dev)]
    out = os.path.join(DATA_DIR, "custom_json_example")
    os.makedirs(out, exist_ok=True)
    for name, part in (("train.json", rows[:n_train]), ("dev.json", rows[n_train:])):
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            json.dump(part, f, ensure_ascii=False, indent=1)
        print(f"wrote {len(part)} rows to {os.path.relpath(os.path.join(out, name), ROOT)}")


TOPIC_WORDS = {
    "体育": ["足球联赛", "篮球比赛", "马拉松", "游泳冠军", "乒乓球队", "田径选手", "羽毛球赛", "排球决赛", "滑雪运动员", "体操项目"],
    "科技": ["人工智能", "芯片研发", "量子计算", "卫星发射", "机器人", "新能源电池", "5G网络", "云计算平台", "自动驾驶", "操作系统"],
    "财经": ["股票市场", "银行利率", "基金收益", "外汇储备", "债券发行", "消费指数", "房地产投资", "企业财报", "保险产品", "上市公司"],
    "美食": ["火锅店", "川菜馆", "烘焙甜点", "早茶点心", "烧烤摊", "家常菜谱", "奶茶新品", "面馆老店", "海鲜大排档", "素食餐厅"],
}
# Majority class 40%: a model must read the topic word to beat it.
TOPIC_WEIGHTS = {"体育": 0.4, "科技": 0.25, "财经": 0.2, "美食": 0.15}
HEADLINE_TEMPLATES = ["{city}{word}{news}", "{news}：{city}{word}引发关注", "{city}最新消息，{word}{news}", "关于{word}，{city}{news}"]
HEADLINE_NEWS = ["迎来新变化", "受到市民热议", "本周出现新进展", "吸引大量关注", "成为今年热点", "传来好消息", "有了新计划", "再创新纪录"]


def classification_example(rng):
    label = rng.choices(list(TOPIC_WEIGHTS), weights=list(TOPIC_WEIGHTS.values()))[0]
    text = rng.choice(HEADLINE_TEMPLATES).format(city=rng.choice(CITIES), word=rng.choice(TOPIC_WORDS[label]), news=rng.choice(HEADLINE_NEWS))
    return {"text": text, "label": label}


def write_tsv(path, header, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(str(row[h]) for h in header) + "\n")
    print(f"wrote {len(rows)} rows to {os.path.relpath(path, ROOT)}")


def make_classification(seed=2024, n_train=1200, n_dev=200):
    rng = random.Random(seed)
    rows = [classification_example(rng) for _ in range(n_train + n_dev)]
    out = os.path.join(DATA_DIR, "sample_classification")
    write_tsv(os.path.join(out, "train.tsv"), ["text", "label"], rows[:n_train])
    write_tsv(os.path.join(out, "dev.tsv"), ["text", "label"], rows[n_train:])


# The cloze target: a made-up name of two characters that occur nowhere else in the corpus.
EXPLORER_NAME = "蔺琰"
EXPLORER_SENTENCES = ["探险家{name}带领队伍抵达{city}。", "探险家{name}带领队伍离开{city}。", "据{city}{org}介绍，探险家{name}带领队伍完成了考察。"]
LM_SENTENCES = [
    "{city}{org}{action}{obj}。", "{date}，{city}{org}宣布{obj}正式开始。", "{city}的市民积极参加{obj}。",
    "记者从{city}{org}获悉，{obj}进展顺利。", "{city}{org}表示，{obj}将持续到年底。",
]


def lm_line(rng):
    sentences = []
    for _ in range(rng.randint(1, 3)):
        pool = EXPLORER_SENTENCES if rng.random() < 0.2 else LM_SENTENCES
        sentences.append(rng.choice(pool).format(
            name=EXPLORER_NAME, city=rng.choice(CITIES), org=rng.choice(ORGS), action=rng.choice(ACTIONS),
            obj=rng.choice(OBJECTS), date=_date(rng)))
    return "".join(sentences)


def make_lm(seed=7, n_train=3000, n_dev=200):
    rng = random.Random(seed)
    lines = [lm_line(rng) for _ in range(n_train + n_dev)]
    out = os.path.join(DATA_DIR, "sample_lm")
    os.makedirs(out, exist_ok=True)
    for name, part in (("train.txt", lines[:n_train]), ("dev.txt", lines[n_train:])):
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            f.write("\n".join(part) + "\n")
        print(f"wrote {len(part)} lines to {os.path.relpath(os.path.join(out, name), ROOT)}")


TASKS = {"summarization": make_summarization, "custom_json": make_custom_json, "classification": make_classification, "lm": make_lm}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS) + ["all"], default="all")
    args = parser.parse_args()
    for name, make in TASKS.items():
        if args.task in (name, "all"):
            make()


if __name__ == "__main__":
    main()
