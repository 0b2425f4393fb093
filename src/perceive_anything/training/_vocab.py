"""Bilingual vocabulary of the synthetic "shapes world".

Kept apart from the generator so that the wording (which a trained model has to reproduce) can be
reviewed in one place.  Every list with more than one entry is a set of interchangeable phrasings:
the generator picks one per caption, so a model has to learn the *content* (shape, colour, size,
texture, position, relations, motion) rather than memorise a single sentence.  Every entry must be
a faithful description of the same fact; the facts themselves are fully determined by the scene.
"""

from __future__ import annotations

import math

# ----------------------------------------------------------------------------------------------
# Shape classes.  `label` = the class name (EN / ZH) that the recognize/explain tasks must output.
# Captions may use the synonyms.
# ----------------------------------------------------------------------------------------------

SHAPE_CLASSES: tuple[str, ...] = (
    "circle", "square", "rectangle", "triangle", "star", "hexagon", "pentagon", "diamond",
    "ring", "cross", "ellipse", "crescent", "heart", "arrow", "trapezoid", "semicircle",
)

LABEL_ZH: dict[str, str] = {
    "circle": "圆形", "square": "正方形", "rectangle": "长方形", "triangle": "三角形",
    "star": "五角星", "hexagon": "六边形", "pentagon": "五边形", "diamond": "菱形",
    "ring": "圆环", "cross": "十字形", "ellipse": "椭圆", "crescent": "月牙形",
    "heart": "心形", "arrow": "箭头", "trapezoid": "梯形", "semicircle": "半圆形",
}

# Synonyms used inside captions (the first one is always the label itself).
SYNONYMS_EN: dict[str, list[str]] = {
    "circle": ["circle", "disk", "round disc"],
    "square": ["square", "square tile"],
    "rectangle": ["rectangle", "oblong block"],
    "triangle": ["triangle"],
    "star": ["star", "five-pointed star"],
    "hexagon": ["hexagon", "six-sided polygon"],
    "pentagon": ["pentagon", "five-sided polygon"],
    "diamond": ["diamond", "rhombus"],
    "ring": ["ring", "donut shape", "annulus"],
    "cross": ["cross", "plus sign"],
    "ellipse": ["ellipse", "oval"],
    "crescent": ["crescent", "crescent moon shape"],
    "heart": ["heart", "heart shape"],
    "arrow": ["arrow", "arrow sign"],
    "trapezoid": ["trapezoid", "trapezium"],
    "semicircle": ["semicircle", "half disk"],
}
SYNONYMS_ZH: dict[str, list[str]] = {
    "circle": ["圆形", "圆盘"],
    "square": ["正方形", "方块"],
    "rectangle": ["长方形", "矩形"],
    "triangle": ["三角形"],
    "star": ["五角星", "星形"],
    "hexagon": ["六边形"],
    "pentagon": ["五边形"],
    "diamond": ["菱形"],
    "ring": ["圆环", "环形"],
    "cross": ["十字形", "加号形状"],
    "ellipse": ["椭圆", "椭圆形"],
    "crescent": ["月牙形", "新月形"],
    "heart": ["心形", "爱心"],
    "arrow": ["箭头"],
    "trapezoid": ["梯形"],
    "semicircle": ["半圆形", "半圆"],
}

DEFINITION_EN: dict[str, str] = {
    "circle": "a round plane figure whose boundary points are all the same distance from its centre",
    "square": "a plane figure with four equal straight sides and four right angles",
    "rectangle": "a plane figure with four right angles whose opposite sides are equal and whose length exceeds its width",
    "triangle": "a plane figure with three straight sides and three corners",
    "star": "a figure with five pointed arms radiating from a common centre, often used as a symbol of excellence",
    "hexagon": "a plane figure with six straight sides and six angles, like a honeycomb cell",
    "pentagon": "a plane figure with five straight sides and five angles",
    "diamond": "a four-sided figure with equal sides standing on one of its corners, also called a rhombus",
    "ring": "a circular band with a round hole in its middle",
    "cross": "a figure made of two bars crossing each other at right angles, like a plus sign",
    "ellipse": "an oval plane figure that looks like a circle stretched along one axis",
    "crescent": "a curved shape like the moon when less than half of it is lit, thick in the middle and tapering to two points",
    "heart": "a figure with two rounded lobes at the top and a point at the bottom, used as a symbol of love",
    "arrow": "a sign made of a straight shaft and a triangular head, used to point in a direction",
    "trapezoid": "a four-sided figure with exactly one pair of parallel sides",
    "semicircle": "half of a circle, bounded by a diameter and an arc",
}
DEFINITION_ZH: dict[str, str] = {
    "circle": "一种平面图形，边界上的每一点到圆心的距离都相等",
    "square": "一种有四条等长直边和四个直角的平面图形",
    "rectangle": "一种有四个直角、对边相等且长大于宽的平面图形",
    "triangle": "一种由三条直边和三个角组成的平面图形",
    "star": "一种由中心向外伸出五个尖角的图形，常用来象征荣誉或优秀",
    "hexagon": "一种有六条直边和六个角的平面图形，形状类似蜂巢的格子",
    "pentagon": "一种有五条直边和五个角的平面图形",
    "diamond": "一种四条边相等、以一个角立起的四边形，也称为菱形",
    "ring": "一种中间有圆孔的圆形环带",
    "cross": "一种由两条互相垂直交叉的横竖条组成的图形，类似加号",
    "ellipse": "一种像被沿一个方向拉长的圆的椭圆形平面图形",
    "crescent": "一种像未满半边的月亮那样弯曲的图形，中间粗、两端尖",
    "heart": "一种上方有两个圆弧、下方收成尖角的图形，常用来象征爱",
    "arrow": "一种由直杆和三角形箭头组成、用来指示方向的符号",
    "trapezoid": "一种只有一组对边平行的四边形",
    "semicircle": "圆的一半，由一条直径和一段圆弧围成",
}

# One true fact per class (used in detailed captions), two phrasings each.
FACTS_EN: dict[str, list[str]] = {
    "circle": ["It has no corners and no straight edges.", "Its outline is perfectly round."],
    "square": ["All four of its sides have the same length.", "It has four equal sides and four right angles."],
    "rectangle": ["It is clearly longer than it is wide.", "Its four corners are all right angles."],
    "triangle": ["It has three straight sides.", "It has exactly three corners."],
    "star": ["It has five sharp points.", "Five pointed arms stick out from its centre."],
    "hexagon": ["It has six straight sides.", "Its outline is made of six edges."],
    "pentagon": ["It has five straight sides.", "Its outline is made of five edges."],
    "diamond": ["It stands on one of its corners.", "Its four sides are of equal length."],
    "ring": ["There is a round hole in its middle.", "The background shows through its central hole."],
    "cross": ["It is made of two crossing bars.", "Its four arms meet at right angles."],
    "ellipse": ["It looks like a stretched circle.", "Its outline is a smooth oval."],
    "crescent": ["It is curved and tapers to two points.", "It looks like a thin slice of the moon."],
    "heart": ["It has two rounded lobes on top and a point at the bottom.", "Its lower end narrows to a point."],
    "arrow": ["It has a straight shaft and a triangular head.", "Its pointed head shows a direction."],
    "trapezoid": ["Only one pair of its sides is parallel.", "Its top edge is shorter than its bottom edge."],
    "semicircle": ["It has one straight edge and one curved edge.", "It is exactly half of a disk."],
}
FACTS_ZH: dict[str, list[str]] = {
    "circle": ["它没有棱角，也没有直边。", "它的轮廓是完美的圆。"],
    "square": ["它的四条边长度相同。", "它有四条等长的边和四个直角。"],
    "rectangle": ["它的长明显大于宽。", "它的四个角都是直角。"],
    "triangle": ["它有三条直边。", "它正好有三个角。"],
    "star": ["它有五个尖角。", "五个尖尖的角从中心向外伸出。"],
    "hexagon": ["它有六条直边。", "它的轮廓由六条边组成。"],
    "pentagon": ["它有五条直边。", "它的轮廓由五条边组成。"],
    "diamond": ["它以一个角立着。", "它的四条边长度相等。"],
    "ring": ["它的中间有一个圆孔。", "透过中间的圆孔可以看到背景。"],
    "cross": ["它由两条交叉的横竖条组成。", "它的四条臂以直角相交。"],
    "ellipse": ["它看起来像一个被拉长的圆。", "它的轮廓是光滑的椭圆。"],
    "crescent": ["它呈弯曲状，两端收成尖角。", "它看起来像一弯细细的月亮。"],
    "heart": ["它上方有两个圆弧，下方是一个尖角。", "它的下端收窄成一个尖。"],
    "arrow": ["它有一根直杆和一个三角形的箭头。", "它尖尖的箭头指示着方向。"],
    "trapezoid": ["它只有一组对边是平行的。", "它的上边比下边短。"],
    "semicircle": ["它有一条直边和一条弧边。", "它正好是圆盘的一半。"],
}

# ----------------------------------------------------------------------------------------------
# Colours (object palette) and muted background colours.
# ----------------------------------------------------------------------------------------------

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 220),
    "purple": (140, 60, 190),
    "pink": (245, 130, 190),
    "brown": (130, 80, 40),
    "black": (25, 25, 25),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "cyan": (40, 200, 210),
}
COLOR_ZH: dict[str, str] = {
    "red": "红色", "orange": "橙色", "yellow": "黄色", "green": "绿色", "blue": "蓝色",
    "purple": "紫色", "pink": "粉色", "brown": "棕色", "black": "黑色", "white": "白色",
    "gray": "灰色", "cyan": "青色",
}
# EN colour words (one spelling each: mixing "gray"/"grey" inside one caption reads as two colours).
COLOR_EN: dict[str, list[str]] = {name: [name] for name in PALETTE}

BACKGROUND_COLORS: tuple[tuple[int, int, int], ...] = (
    (214, 206, 188),  # beige
    (182, 192, 204),  # light steel
    (92, 100, 112),   # slate
    (200, 214, 194),  # sage
    (160, 146, 134),  # taupe
    (58, 60, 78),     # dark navy
    (230, 226, 216),  # off-white
    (120, 132, 118),  # moss
)
BACKGROUND_KINDS: tuple[str, ...] = ("flat", "gradient", "noise", "texture")

TEXTURES: tuple[str, ...] = ("solid", "stripes", "dots", "checker", "gradient")
TEXTURE_ADJ_EN: dict[str, list[str]] = {
    "solid": ["solid", "plain"],
    "stripes": ["striped"],
    "dots": ["polka-dot", "spotted", "dotted"],
    "checker": ["checkered", "checkerboard-patterned"],
    "gradient": ["gradient-shaded", "gradient-coloured"],
}
TEXTURE_WITH_EN: dict[str, list[str]] = {
    "solid": ["with a uniform fill", "filled with a single flat colour"],
    "stripes": ["with stripes", "covered in stripes"],
    "dots": ["with dots", "covered in small dots"],
    "checker": ["with a checkerboard pattern", "with a checkered pattern"],
    "gradient": ["with a light-to-dark gradient", "with a colour gradient"],
}
TEXTURE_ADJ_ZH: dict[str, list[str]] = {
    "solid": ["纯色的", "单色的"],
    "stripes": ["带条纹的", "有条纹的"],
    "dots": ["带圆点的", "有斑点的"],
    "checker": ["棋盘格纹理的", "带格子图案的"],
    "gradient": ["渐变色的"],
}
TEXTURE_SENT_ZH: dict[str, list[str]] = {
    "solid": ["表面是均匀的纯色", "整体填充为单一颜色"],
    "stripes": ["表面布满条纹", "上面有条纹图案"],
    "dots": ["表面布满小圆点", "上面有圆点图案"],
    "checker": ["表面是棋盘格图案", "上面有格子图案"],
    "gradient": ["颜色由浅到深渐变", "表面带有颜色渐变"],
}

SIZES: tuple[str, ...] = ("small", "medium", "large")
# Radius of the (unit-circle-bounded) shape as a fraction of the image side.
SIZE_RADIUS: dict[str, tuple[float, float]] = {
    "small": (0.07, 0.09), "medium": (0.11, 0.14), "large": (0.17, 0.21),
}
SIZE_EN: dict[str, list[str]] = {
    "small": ["small", "little"], "medium": ["medium-sized", "mid-sized"], "large": ["large", "big"],
}
SIZE_ZH: dict[str, list[str]] = {
    "small": ["较小的", "小小的"], "medium": ["中等大小的"], "large": ["较大的", "大号的"],
}

# ----------------------------------------------------------------------------------------------
# Positions (3x3 grid of the visible-mask centroid), relations, directions.
# ----------------------------------------------------------------------------------------------

POSITION_EN: dict[tuple[int, int], list[str]] = {
    (0, 0): ["in the top-left corner", "in the upper-left part of the image", "at the top left"],
    (0, 1): ["at the top", "near the top edge", "in the upper middle of the image"],
    (0, 2): ["in the top-right corner", "in the upper-right part of the image", "at the top right"],
    (1, 0): ["on the left side", "at the left of the image", "in the middle of the left side"],
    (1, 1): ["in the center", "in the middle of the image", "near the center"],
    (1, 2): ["on the right side", "at the right of the image", "in the middle of the right side"],
    (2, 0): ["in the bottom-left corner", "in the lower-left part of the image", "at the bottom left"],
    (2, 1): ["at the bottom", "near the bottom edge", "in the lower middle of the image"],
    (2, 2): ["in the bottom-right corner", "in the lower-right part of the image", "at the bottom right"],
}
POSITION_ZH: dict[tuple[int, int], list[str]] = {
    (0, 0): ["图像左上角", "画面左上方"],
    (0, 1): ["图像顶部", "画面上方中间"],
    (0, 2): ["图像右上角", "画面右上方"],
    (1, 0): ["图像左侧", "画面左边"],
    (1, 1): ["图像中央", "画面正中间"],
    (1, 2): ["图像右侧", "画面右边"],
    (2, 0): ["图像左下角", "画面左下方"],
    (2, 1): ["图像底部", "画面下方中间"],
    (2, 2): ["图像右下角", "画面右下方"],
}

RELATION_EN: dict[str, list[str]] = {
    "left": ["to the left of", "on the left of"],
    "right": ["to the right of", "on the right of"],
    "above": ["above", "over"],
    "below": ["below", "beneath"],
}
RELATION_ZH: dict[str, list[str]] = {
    "left": ["的左边", "的左侧"], "right": ["的右边", "的右侧"],
    "above": ["的上方", "的上面"], "below": ["的下方", "的下面"],
}

# 8 directions, index k <-> angle k*45 degrees in image coordinates (y down): 0 = right, 2 = down.
DIR_VECTORS: tuple[tuple[float, float], ...] = tuple(
    (round(math.cos(k * math.pi / 4), 6), round(math.sin(k * math.pi / 4), 6)) for k in range(8)
)
MOVE_DIR_EN: tuple[str, ...] = (
    "to the right", "toward the lower right", "downward", "toward the lower left",
    "to the left", "toward the upper left", "upward", "toward the upper right",
)
MOVE_DIR_ZH: tuple[str, ...] = ("向右", "向右下方", "向下", "向左下方", "向左", "向左上方", "向上", "向右上方")
POINT_DIR_EN: tuple[str, ...] = (
    "to the right", "to the lower right", "down", "to the lower left",
    "to the left", "to the upper left", "up", "to the upper right",
)
POINT_DIR_ZH: tuple[str, ...] = ("右方", "右下方", "下方", "左下方", "左方", "左上方", "上方", "右上方")
EDGE_EN: dict[str, str] = {"left": "left", "right": "right", "top": "top", "bottom": "bottom"}
EDGE_ZH: dict[str, str] = {"left": "左", "right": "右", "top": "上", "bottom": "下"}
