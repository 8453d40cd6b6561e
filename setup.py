import os.path as osp
from setuptools import find_packages, setup


def readme():
    with open('README.md', encoding='utf-8') as f:
        return f.read()


def get_version():
    scope = {}
    with open(osp.join('mmaddp', 'version.py'), encoding='utf-8') as f:
        exec(compile(f.read(), 'version.py', 'exec'), scope)
    return scope['__version__']


def parse_requirements(fname):
    """Read a requirements file, dropping comments and blank lines."""
    path = osp.join(osp.dirname(__file__), 'requirements', fname)
    with open(path, encoding='utf-8') as f:
        lines = [ln.split('#', 1)[0].strip() for ln in f]
    return [ln for ln in lines if ln]


if __name__ == '__main__':
    setup(
        name='mmaddp',
        version=get_version(),
        description='OpenMMLab toolkit for ADDP: Alternating Denoising '
        'Diffusion Process for image recognition and generation',
        long_description=readme(),
        long_description_content_type='text/markdown',
        keywords='computer vision, self-supervised learning, ADDP, ViT',
        packages=find_packages(exclude=('configs', 'tools', 'tests')),
        include_package_data=True,
        python_requires='>=3.8',
        license='Apache License 2.0',
        install_requires=parse_requirements('runtime.txt'),
        extras_require=dict(
            mim=parse_requirements('mminstall.txt'),
            tests=parse_requirements('tests.txt'),
            build=parse_requirements('build.txt'),
        ),
        zip_safe=False)
