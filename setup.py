from setuptools import find_packages, setup

setup(
    name="motion_rcnn_d2",
    version="0.1.0",
    description="Motion R-CNN (instance-level 3D motion from two frames and depth), "
    "FlowNetS and SfM-Net as a Detectron2 plugin",
    packages=find_packages(exclude=("tests", "tests.*", "tools")),
    python_requires=">=3.9",
    # Detectron2 itself is not on PyPI under its own name: scripts/setup.sh installs it.
    install_requires=[
        "torch",
        "torchvision",
        "numpy",
        "fvcore",
        "pycocotools",
        "opencv-python-headless",
        "Pillow",
        "tqdm",
        "tabulate",
        "matplotlib",
    ],
    # export: tools/export_model.py --format onnx (torch.onnx's dynamo exporter) and running
    # the ONNX file (onnxruntime); the other formats need nothing more.
    extras_require={"test": ["pytest>=7.3"], "export": ["onnx", "onnxscript", "onnxruntime"]},
)
