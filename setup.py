from configparser import ConfigParser
import setuptools, shlex
from setuptools.command.build_ext import build_ext

# note: all settings are in settings.ini; edit there, not here
config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

cfg_keys = 'version description keywords author author_email'.split()
expected = cfg_keys + "lib_name user branch license status min_python audience language".split()
for o in expected: assert o in cfg, "missing expected setting: {}".format(o)
setup_cfg = {o: cfg[o] for o in cfg_keys}

licenses = {
    'apache2': 'Apache-2.0',
    'mit': 'MIT',
    'gpl2': 'GPL-2.0-only',
    'gpl3': 'GPL-3.0-only',
    'bsd3': 'BSD-3-Clause',
}
statuses = ['0 - Pre-Planning', '1 - Planning', '2 - Pre-Alpha', '3 - Alpha',
            '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
py_versions = '3.9 3.10 3.11 3.12 3.13 3.14'.split()

requirements = shlex.split(cfg.get('requirements', ''))
if cfg.get('pip_requirements'): requirements += shlex.split(cfg.get('pip_requirements', ''))
min_python = cfg['min_python']
dev_requirements = shlex.split(cfg.get('dev_requirements') or '')

package_data = dict()
pkg_data = cfg.get('package_data', None)
if pkg_data: package_data[cfg['lib_name']] = pkg_data.split()
setup_cfg['package_data'] = package_data

class BuildFused(build_ext):
    "The C loop: with OpenMP where the compiler has it, else without; with no working compiler, installs without it"
    flags = ['-O3', '-ffp-contract=off', '-fno-fast-math', '-fno-math-errno', '-pthread']
    def build_extension(self, ext):
        err = None
        for openmp in (['-fopenmp'], []):
            ext.extra_compile_args, ext.extra_link_args = self.flags + openmp, ['-pthread'] + openmp
            try: return super().build_extension(ext)
            except Exception as e: err = e
        self.warn(f"mixcut_nb: the C loop was not built ({err}); mixing falls back to mix_reference")

fused = setuptools.Extension(f"{cfg['lib_name']}._fused", [f"{cfg['lib_name']}/_fused.c"], py_limited_api=True,
                             define_macros=[('Py_LIMITED_API', '0x030A0000')])

setuptools.setup(
    ext_modules=[fused],
    cmdclass={'build_ext': BuildFused},
    options={'bdist_wheel': {'py_limited_api': 'cp310'}},   # one wheel serves every CPython >= 3.10
    name=cfg['lib_name'],
    license=licenses.get(cfg['license'].lower(), cfg['license']),
    classifiers=[
        'Development Status :: ' + statuses[int(cfg['status'])],
        'Intended Audience :: ' + cfg['audience'].title(),
        'Natural Language :: ' + cfg['language'].title(),
    ] + ['Programming Language :: Python :: ' + o for o in py_versions[py_versions.index(min_python):]],
    url=cfg['git_url'],
    packages=setuptools.find_packages(include=[cfg['lib_name'], cfg['lib_name'] + '.*']),
    include_package_data=True,
    install_requires=requirements,
    extras_require={'dev': dev_requirements},
    dependency_links=cfg.get('dep_links', '').split(),
    python_requires='>=' + cfg['min_python'],
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={
        'console_scripts': cfg.get('console_scripts', '').split(),
        'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d']
    },
    **setup_cfg)
